"""Plain causal language-model fine-tuning on the data module's ``forget`` split.

Used by the demo and the benchmarks to *continue pre-training* a model on a corpus that contains
the forget set, so the forget set is truly "seen", and to build the exact-retrain reference (the
same continued pre-training without the forget set). It reuses the unlearning machinery (model
loading, optimizer, schedule, evaluation, export) with the sign of the forget term flipped.
"""

from __future__ import annotations

from torch import Tensor

from .losses import token_nll
from .methods.base import UnlearningModule


class ContinuedPretraining(UnlearningModule):
    """Minimise the NLL of the training ("forget") batches: ordinary language-model training."""

    def forget_loss(self, batch: dict[str, Tensor]) -> Tensor:
        return token_nll(self(batch), batch["labels"])
