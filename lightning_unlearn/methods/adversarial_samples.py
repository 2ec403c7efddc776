"""Adversarial samples (AS): train towards the original model's most likely *wrong* next token.

Yao et al., ACL 2024 (arXiv:2402.15159), "AS": ``Q = delta(a_t)`` with
``a_t = argmax_{a != w_t} P_M(a | w_<t)`` from the original model ``M``; the sign is +1 (descent on
the adversarial targets). Targets are computed on the fly from the frozen reference model; the
true next token is excluded position by position (after the next-token shift).
"""

from __future__ import annotations

from torch import Tensor

from ..losses import adversarial_labels, token_nll
from .base import UnlearningModule


class AdversarialSamples(UnlearningModule):
    """Fine-tune on the original model's best wrong prediction at every forget position."""

    forget_needs_reference = True

    def forget_targets(self, batch: dict[str, Tensor]) -> Tensor:
        """Adversarial labels aligned like ``batch['labels']``."""
        return adversarial_labels(self.reference_logits(batch), batch["labels"])

    def forget_loss(self, batch: dict[str, Tensor]) -> Tensor:
        return token_nll(self(batch), self.forget_targets(batch))
