"""Score a model on evaluation batches without a Trainer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .base import UnlearningMetric
from .metrics import EVAL_SPLITS, UnlearningEvaluator, score_batch

__all__ = ["evaluate_splits", "evaluate_model"]


def _loaders(source: Any) -> list[Iterable]:
    """A dataloader, a list or dict of them, a CombinedLoader, or a data module's val loaders."""
    if hasattr(source, "val_dataloader") and hasattr(source, "setup"):
        source.setup("validate")
        source = source.val_dataloader()
    if hasattr(source, "iterables") and hasattr(source, "flattened"):  # Lightning CombinedLoader
        source = source.iterables
    if isinstance(source, Mapping):
        return list(source.values())
    if isinstance(source, (list, tuple)) and source and not isinstance(source[0], Mapping):
        return list(source)
    return [source]


def _network(module: nn.Module) -> nn.Module:
    """The transformers model to run: an UnlearningModule's (adapters active), or the model."""
    if hasattr(module, "training_step") and isinstance(getattr(module, "model", None), nn.Module):
        return module.model
    return module


@torch.no_grad()
def evaluate_model(
    module: nn.Module,
    data: Any,
    *,
    splits: tuple[str, ...] = EVAL_SPLITS,
    metrics: Sequence[UnlearningMetric] | None = None,
    max_batches: int | None = None,
    exclude: dict[str, Any] | None = None,
) -> UnlearningEvaluator:
    """Run evaluation batches through a model; returns the evaluator after ``compute()``.

    The same computation as ``trainer.validate`` on an
    :class:`~lightning_unlearn.methods.base.UnlearningModule` (one forward pass per window,
    :func:`~lightning_unlearn.losses.token_statistics`, :class:`UnlearningEvaluator`), in one
    process, without gradients, in eval mode (the previous mode is restored). Under
    ``torch.distributed`` the documents are gathered across ranks: call it on every rank, each
    with its shard of the data, or on none. ``evaluator.last`` holds the values and the
    per-document values, ``evaluator.last_documents`` the per-token statistics per document.

    Args:
        module: an ``UnlearningModule`` (built with ``configure_model()`` if needed) or a plain
            transformers causal LM, e.g. an exact-retrain model.
        data: a dataloader yielding batches that carry ``split`` (and ``doc_index``,
            ``zlib_len``), a list or dict of such loaders, a ``CombinedLoader`` of them, or a data
            module (its ``val_dataloader()`` is used).
        splits: the evaluation split names.
        metrics: the metrics (token metrics are computed); default: the default metrics.
        max_batches: stop after this many batches per loader (``None``: all).
        exclude: ``{split: doc_index values}`` left out of the metrics.
    """
    if getattr(module, "model", "missing") is None and hasattr(module, "configure_model"):
        module.configure_model()
    try:
        device = next(module.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    evaluator = UnlearningEvaluator(splits, metrics=metrics)
    was_training = module.training
    module.eval()
    try:
        for loader in _loaders(data):
            for i, batch in enumerate(loader):
                if max_batches is not None and i >= max_batches:
                    break
                split = batch.get("split")
                if isinstance(split, (list, tuple)):
                    split = split[0]
                if split is None:
                    raise ValueError(
                        "evaluation batches must carry their split name under 'split' "
                        f"(one of {splits}); got keys {sorted(batch)}"
                    )
                batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
                score_batch(_network(module), batch, split, evaluator)
        evaluator.compute(exclude=exclude)
        return evaluator
    finally:
        module.train(was_training)


def evaluate_splits(
    module: nn.Module,
    data: Any,
    *,
    splits: tuple[str, ...] = EVAL_SPLITS,
    metrics: Sequence[UnlearningMetric] | None = None,
    max_batches: int | None = None,
) -> dict[str, float]:
    """:func:`evaluate_model`'s flat values: ``{"forget/ppl": float, "mia/loss_auc": float, ...}``."""
    evaluator = evaluate_model(
        module, data, splits=splits, metrics=metrics, max_batches=max_batches
    )
    return {key: float(value) for key, value in evaluator.last.values.items()}
