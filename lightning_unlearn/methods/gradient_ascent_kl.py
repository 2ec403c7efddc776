"""Gradient ascent on the forget set + KL to the frozen original model on retain data (GA+KL).

Yao et al., ACL 2024 (arXiv:2402.15159), "GA+KL": the retain term is
``KL(P_ref(.|z_<t) || P_theta(.|z_<t))`` with ``P_ref`` the original model before unlearning.
"""

from __future__ import annotations

from torch import Tensor

from ..losses import kl_to_reference, token_nll
from .base import UnlearningModule


class GradientAscentKL(UnlearningModule):
    """GA on forget data, KL divergence to the original model on retain data."""

    uses_retain = True
    needs_reference = True

    def forget_loss(self, batch: dict[str, Tensor]) -> Tensor:
        return -token_nll(self(batch), batch["labels"])

    def retain_loss(self, batch: dict[str, Tensor]) -> Tensor:
        return kl_to_reference(self(batch), self.reference_logits(batch), batch["labels"])
