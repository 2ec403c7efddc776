"""Gradient ascent (GA): maximise the forget set's negative log-likelihood.

Yao et al., "Machine Unlearning of Pre-trained Large Language Models", ACL 2024
(arXiv:2402.15159), method "GA": ``L = -sum_t CE(delta(w_t), P_theta(.|w_<t))``.
"""

from __future__ import annotations

from torch import Tensor

from ..losses import token_nll
from .base import UnlearningModule


class GradientAscent(UnlearningModule):
    """Gradient ascent on the forget set; no retain term."""

    def forget_loss(self, batch: dict[str, Tensor]) -> Tensor:
        return -token_nll(self(batch), batch["labels"])
