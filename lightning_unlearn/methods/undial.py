"""UNDIAL: self-distillation towards the original model with the true token's logit lowered.

Dong, Lin, Belkin, Huerta & Vulić, "UNDIAL: Self-Distillation with Adjusted Logits for Robust
Unlearning in Large Language Models", NAACL 2025 (arXiv:2402.10052). At every forget position the
target distribution is ``softmax(z_ref - gamma * onehot(y_t))``: the frozen original's logits with
the true next token's logit lowered by the strength ``gamma``; the model is trained with
cross-entropy to that target (equal to the KL divergence up to the target's entropy, so the same
gradient). Because the target stays close to the original everywhere except the forgotten token,
the update is bounded, unlike gradient ascent. The paper uses LoRA (r 8, alpha 16), learning rate
1e-4, gamma in {3, 10, 30} and no retain data.
"""

from __future__ import annotations

from torch import Tensor

from ..losses import soft_target_cross_entropy, undial_target_logits
from ..validation import check_number
from .base import UnlearningModule


class UNDIAL(UnlearningModule):
    """Self-distillation to adjusted original logits on forget data.

    Args:
        strength: how much the true next token's logit is lowered in the target (the paper's
            gamma, often called beta in code; paper range 3-30).
        retain_term: ``"none"`` (paper; the base's default), ``"nll"`` or ``"kl"`` on retain data,
            weighted by ``retain_weight``; see :class:`UnlearningModule`.
        **kwargs: see :class:`UnlearningModule`.
    """

    forget_needs_reference = True

    def __init__(self, model_name_or_path: str, *, strength: float = 10.0, **kwargs) -> None:
        check_number("strength", strength, low=0)
        super().__init__(model_name_or_path, **kwargs)
        self.strength = float(strength)

    def forget_targets(self, batch: dict[str, Tensor]) -> Tensor:
        """Adjusted target logits, aligned like the model's logits."""
        return undial_target_logits(
            self.reference_logits(batch), batch["labels"], strength=self.strength
        )

    def forget_loss(self, batch: dict[str, Tensor]) -> Tensor:
        return soft_target_cross_entropy(self(batch), batch["labels"], self.forget_targets(batch))
