"""SimNPO: reference-free, length-normalised negative preference optimisation.

Fan, Liu, Lin, Jia, Zhang, Mei & Liu, "Simplicity Prevails: Rethinking Negative Preference
Optimization for LLM Unlearning", 2024 (arXiv:2410.07163). The forget term is

    L_SimNPO = -(2/beta) * E_{y in forget} log sigmoid(-(beta/|y|) * log pi_theta(y) - delta)

with ``|y|`` the number of target tokens and ``delta`` a reward margin (gamma in the paper). No
reference model is needed unless the retain term is a KL to the original. The paper pairs it with
an NLL retain term; on TOFU it reports beta = 2.5 and delta = 0 (open-unlearning ships beta 4.5,
delta 0 for Llama-3.2-1B; tune per model).
"""

from __future__ import annotations

from torch import Tensor

from ..losses import sequence_logprob, simnpo_loss, target_counts
from ..validation import check_number
from .base import RetainTerm, UnlearningModule


class SimNPO(UnlearningModule):
    """SimNPO on forget data, with an optional retain term.

    Args:
        beta: inverse temperature (paper, TOFU: 2.5).
        delta: reward margin subtracted inside the sigmoid (paper's gamma; TOFU: 0).
        retain_term: ``"none"``, ``"nll"`` (the paper's setting) or ``"kl"`` on retain data,
            weighted by ``retain_weight``; see :class:`UnlearningModule`.
        **kwargs: see :class:`UnlearningModule`.
    """

    def __init__(
        self,
        model_name_or_path: str,
        *,
        beta: float = 2.5,
        delta: float = 0.0,
        retain_term: RetainTerm = "nll",
        **kwargs,
    ) -> None:
        check_number("beta", beta, low=0, strict=True)
        super().__init__(model_name_or_path, retain_term=retain_term, **kwargs)
        self.beta = float(beta)
        self.delta = float(delta)

    def forget_loss(self, batch: dict[str, Tensor]) -> Tensor:
        labels = batch["labels"]
        logprob = sequence_logprob(self(batch), labels)
        return simnpo_loss(logprob, target_counts(labels), beta=self.beta, delta=self.delta)
