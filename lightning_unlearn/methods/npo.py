"""Negative Preference Optimization (NPO).

Zhang, Lin, Bai & Mei, "Negative Preference Optimization: From Catastrophic Collapse to Effective
Unlearning", COLM 2024 (arXiv:2404.05868). The forget term is

    L_NPO = -(2/beta) * E_{y in forget} log sigmoid(-beta * log(pi_theta(y) / pi_ref(y)))

with ``pi_ref`` the frozen original model and ``log pi(y)`` the summed log-probability of a forget
sequence. As ``beta -> 0`` its gradient becomes that of gradient ascent; for ``beta > 0`` the
weight ``2 * sigmoid(beta * log_ratio)`` of a sequence shrinks once it is already unlikely, which
slows the collapse of gradient ascent. The paper's "NPO+RT" adds NLL on retain data and "NPO+KL"
a KL term to the original model (``retain_term``). The paper uses beta = 0.1.

With packed batches (several documents in one row) a "sequence" is a row.
"""

from __future__ import annotations

from torch import Tensor

from ..losses import npo_loss, sequence_logprob
from ..validation import check_number
from .base import UnlearningModule


class NegativePreferenceOptimization(UnlearningModule):
    """NPO on forget data, with an optional retain term.

    Args:
        beta: inverse temperature of NPO (paper: 0.1). Smaller is closer to gradient ascent.
        retain_term: ``"none"`` (the paper's NPO; the base's default), ``"nll"`` (NPO+RT) or
            ``"kl"`` (NPO+KL) on retain data, weighted by ``retain_weight``; see
            :class:`UnlearningModule`.
        **kwargs: see :class:`UnlearningModule`.
    """

    forget_needs_reference = True

    def __init__(self, model_name_or_path: str, *, beta: float = 0.1, **kwargs) -> None:
        check_number("beta", beta, low=0, strict=True)
        super().__init__(model_name_or_path, **kwargs)
        self.beta = float(beta)

    def forget_loss(self, batch: dict[str, Tensor]) -> Tensor:
        labels = batch["labels"]
        logprob = sequence_logprob(self(batch), labels)
        reference = sequence_logprob(self.reference_logits(batch), labels)
        return npo_loss(logprob, reference, beta=self.beta)
