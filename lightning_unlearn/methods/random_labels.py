"""Random labels (RL): fine-tune the forget set towards random next-token targets.

Yao et al., ACL 2024 (arXiv:2402.15159), "RL". Two target distributions ``Q``:

* ``"uniform"``: uniform over the vocabulary (the cross-entropy is the mean negative log-prob);
* ``"random_model"``: ``P_{M_rand}(.|w_<t)``, the next-token distribution of a randomly
  initialised model of the same architecture, as the paper's text describes.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..losses import target_cross_entropy, uniform_cross_entropy
from ..models import freeze, model_inputs, random_like
from .base import UnlearningModule


class RandomLabels(UnlearningModule):
    """Cross-entropy to random targets on forget data.

    Args:
        target: ``"uniform"`` or ``"random_model"`` (see the module docstring).
        random_seed: seed of the randomly initialised target model.
        **kwargs: see :class:`UnlearningModule`.
    """

    def __init__(
        self,
        model_name_or_path: str,
        *,
        target: Literal["uniform", "random_model"] = "uniform",
        random_seed: int = 1234,
        **kwargs,
    ) -> None:
        if target not in ("uniform", "random_model"):
            raise ValueError(f"target must be 'uniform' or 'random_model', got {target!r}")
        super().__init__(model_name_or_path, **kwargs)
        self.target = target
        self.random_seed = random_seed
        self.random_model = None

    def configure_extra_models(self) -> None:
        if self.target == "random_model" and self.random_model is None:
            self.random_model = freeze(random_like(self.hf_model, seed=self.random_seed))

    @torch.no_grad()
    def forget_targets(self, batch: dict[str, Tensor]) -> Tensor:
        """Target distribution per position (aligned like the logits)."""
        inputs = model_inputs(batch)
        return F.softmax(self.random_model(**inputs, use_cache=False).logits.float(), dim=-1)

    def forget_loss(self, batch: dict[str, Tensor]) -> Tensor:
        logits = self(batch)
        if self.target == "uniform":
            return uniform_cross_entropy(logits, batch["labels"])
        return target_cross_entropy(logits, batch["labels"], self.forget_targets(batch))
