"""Gradient ascent on the forget set + KL to the frozen original model on retain data (GA+KL).

Yao et al., ACL 2024 (arXiv:2402.15159), "GA+KL": the retain term is
``KL(P_ref(.|z_<t) || P_theta(.|z_<t))`` with ``P_ref`` the original model before unlearning (the
base class's ``retain_term="kl"``, this class's default).
"""

from __future__ import annotations

from torch import Tensor

from ..losses import token_nll
from .base import RetainTerm, UnlearningModule


class GradientAscentKL(UnlearningModule):
    """GA on forget data, KL divergence to the original model on retain data.

    Args:
        retain_term: the retain term (paper: ``"kl"``); see :class:`UnlearningModule`.
        **kwargs: see :class:`UnlearningModule`.
    """

    def __init__(self, model_name_or_path: str, *, retain_term: RetainTerm = "kl", **kwargs):
        super().__init__(model_name_or_path, retain_term=retain_term, **kwargs)

    def forget_loss(self, batch: dict[str, Tensor]) -> Tensor:
        return -token_nll(self(batch), batch["labels"])
