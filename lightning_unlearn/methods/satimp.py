"""SatImp: token reweighting by saturation and importance.

Yang, Wang, Huang, Liu, Zhang & Han, "Exploring Criteria of Loss Reweighting to Enhance LLM
Unlearning", ICML 2025 (arXiv:2505.11953). Per token ``t`` of a forget sequence, with ``CE_t`` the
token's cross-entropy and ``p_t = exp(-CE_t)``, the forget term is

    L_SatImp = -mean_t( p_t^beta1 * (1 - p_t)^beta2 * CE_t )     (the weight detached)

over the real target tokens. The *saturation* factor ``p^beta1`` (as in WGA) stops pushing on
tokens already forgotten; the *importance* factor ``(1 - p)^beta2`` damps tokens the model is
nearly certain of, whose ascent gradient would be the largest and least informative. The paper
uses ``beta1 = 5``, ``beta2 = 1`` and an NLL retain term weighted 0.1 against the forget term.
"""

from __future__ import annotations

from torch import Tensor

from ..losses import satimp_loss
from .base import RetainTerm, UnlearningModule


class SatImp(UnlearningModule):
    """Gradient ascent with token weights ``p^beta1 * (1 - p)^beta2``.

    Args:
        beta1: exponent of the saturation weight ``p_t^beta1`` (paper: 5.0).
        beta2: exponent of the importance weight ``(1 - p_t)^beta2`` (paper: 1.0); 0 turns the
            method into WGA with ``beta = beta1``.
        retain_term: ``"nll"`` (paper), ``"kl"`` or ``"none"`` on retain data; see
            :class:`UnlearningModule`.
        retain_weight: weight of the retain term against a forget weight of 1 (paper's reference
            setting: 0.1).
        **kwargs: see :class:`UnlearningModule`.
    """

    def __init__(
        self,
        model_name_or_path: str,
        *,
        beta1: float = 5.0,
        beta2: float = 1.0,
        retain_term: RetainTerm = "nll",
        retain_weight: float = 0.1,
        **kwargs,
    ) -> None:
        for name, value in (("beta1", beta1), ("beta2", beta2)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        super().__init__(
            model_name_or_path, retain_term=retain_term, retain_weight=retain_weight, **kwargs
        )
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)

    def forget_loss(self, batch: dict[str, Tensor]) -> Tensor:
        return satimp_loss(self(batch), batch["labels"], beta1=self.beta1, beta2=self.beta2)
