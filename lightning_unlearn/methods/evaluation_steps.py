"""The evaluation steps every method shares: each validation (and test) batch scored into the
module's :class:`~lightning_unlearn.evaluation.metrics.UnlearningEvaluator` (per-document token
statistics), the metrics logged under ``val/`` at the end of the pass."""

from __future__ import annotations

from typing import Any

from ..evaluation.metrics import score_batch


def split_name(batch: dict[str, Any]) -> str:
    """The split an evaluation batch belongs to (the data module puts it under ``"split"``)."""
    split = batch.get("split")
    if isinstance(split, (list, tuple)):
        split = split[0]
    if split is None:
        raise ValueError("evaluation batches must carry their split name under 'split'")
    return split


class EvaluationSteps:
    """Validation and test steps of a module with ``model``, ``evaluator`` and
    ``_require_model`` (a mixin of :class:`~lightning_unlearn.methods.base.UnlearningModule`)."""

    def validation_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        split = split_name(batch)
        self._require_model()
        score_batch(self.model, batch, split, self.evaluator)

    def on_validation_epoch_end(self) -> None:
        for key, value in self.evaluator.compute().items():
            self.log(f"val/{key}", value, sync_dist=False, rank_zero_only=False)
        self.evaluator.reset()

    test_step = validation_step
    on_test_epoch_end = on_validation_epoch_end
