"""Weighted gradient ascent (WGA).

Wang, Zhou, Zhou, Shin, Han & Weinberger, "Rethinking LLM Unlearning Objectives: A Gradient
Perspective and Go Beyond", ICLR 2025 (arXiv:2502.19301). Per token ``t`` of a forget sequence,
with ``CE_t`` the token's cross-entropy and ``p_t = exp(-CE_t)`` its probability, the forget term is

    L_WGA = -mean_t( p_t^beta * CE_t )        (p_t^beta a constant: detached)

over the real target tokens: gradient ascent whose pull on each token fades as the token becomes
unlikely, so the update concentrates on what is still remembered instead of driving forgotten
tokens to ever lower probability (the collapse of plain gradient ascent). ``beta = 0`` is gradient
ascent. The paper and open-unlearning use ``beta = 1`` with an NLL retain term of weight 1.
"""

from __future__ import annotations

from torch import Tensor

from ..losses import wga_loss
from .base import RetainTerm, UnlearningModule


class WeightedGradientAscent(UnlearningModule):
    """Gradient ascent with each forget token weighted by its probability to the power ``beta``.

    Args:
        beta: exponent of the token weight ``p_t^beta`` (paper and open-unlearning: 1.0); 0 is
            plain gradient ascent, larger values fade the pull of unlikely tokens faster.
        retain_term: ``"nll"`` (open-unlearning's WGA: gradient descent on retain data),
            ``"kl"`` or ``"none"``, weighted by ``retain_weight``; see :class:`UnlearningModule`.
        **kwargs: see :class:`UnlearningModule`.
    """

    def __init__(
        self,
        model_name_or_path: str,
        *,
        beta: float = 1.0,
        retain_term: RetainTerm = "nll",
        **kwargs,
    ) -> None:
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        super().__init__(model_name_or_path, retain_term=retain_term, **kwargs)
        self.beta = float(beta)

    def forget_loss(self, batch: dict[str, Tensor]) -> Tensor:
        return wga_loss(self(batch), batch["labels"], beta=self.beta)
