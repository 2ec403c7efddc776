"""A method defined outside the library: its class and nothing else. The tests name it by its
dotted class path (``toy_methods.HalfGradientAscent``) in ``fit``, the planner and the quality
benchmark's method selection."""

from __future__ import annotations

from torch import Tensor

from lightning_unlearn import UnlearningModule
from lightning_unlearn.losses import token_nll


class HalfGradientAscent(UnlearningModule):
    """Gradient ascent at half strength, with the base class's NLL retain term."""

    def __init__(self, model_name_or_path: str, *, retain_term: str = "nll", **kwargs) -> None:
        super().__init__(model_name_or_path, retain_term=retain_term, **kwargs)

    def forget_loss(self, batch: dict[str, Tensor]) -> Tensor:
        return -0.5 * token_nll(self(batch), batch["labels"])
