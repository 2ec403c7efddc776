"""The evaluator: one forward pass per window, every configured token metric from it.

:class:`UnlearningEvaluator` is what :class:`~lightning_unlearn.methods.base.UnlearningModule`
feeds during validation and test (and :func:`~lightning_unlearn.evaluation.runner.evaluate_splits`
outside a Trainer): ``update(split, stats, batch)`` per batch, then ``compute()`` once per epoch on
every process (it gathers the documents of all processes, so every rank returns the same values)
and ``reset()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..losses import token_statistics
from ..models import model_inputs
from .base import MetricResult, TokenMetric, UnlearningMetric
from .documents import DocumentCollector, SplitDocuments
from .mia import MembershipInference
from .perplexity import Perplexity

EVAL_SPLITS = ("forget", "approximate", "retain", "general")

__all__ = [
    "EVAL_SPLITS",
    "UnlearningEvaluator",
    "compute_token_metrics",
    "default_metrics",
    "score_batch",
]


def default_metrics(
    *, reference: str | None = None, retrain: str | None = None
) -> list[UnlearningMetric]:
    """Perplexity per split; the four membership-inference attacks, the gradient-norm attack and
    the reference-model attack (``reference``: a model that never saw the forget set; skipped
    without one), forget vs approximate, each AUC with a bootstrap interval; exact memorisation
    and extraction strength; MUSE's PrivLeak against the approximate split. All from one forward
    pass per document (the metrics that generate text are opt-in: ``VerbatimMemorisation``).
    ``retrain``: a model retrained without the forget set, PrivLeak's reference."""
    from .memorisation import Memorisation
    from .mia_attacks import GradientNormMembership, ReferenceMembership
    from .muse import PrivLeak

    return [
        Perplexity(),
        MembershipInference(),
        GradientNormMembership(),
        ReferenceMembership(reference),
        Memorisation(),
        PrivLeak(retrain),
    ]


def score_batch(model: nn.Module, batch: dict[str, Any], split: str, evaluator) -> None:
    """One evaluation batch: one forward pass, its per-token statistics (and the last hidden
    states where a metric of ``evaluator`` wants them for ``split``) into ``evaluator``."""
    hidden = split in evaluator.hidden_splits
    out = model(**model_inputs(batch), use_cache=False, output_hidden_states=hidden)
    logits = out.logits if hasattr(out, "logits") else out
    stats = token_statistics(logits, batch["labels"])
    if hidden:
        stats["hidden"] = out.hidden_states[-1][:, :-1]
        stats["output_weight"] = model.get_output_embeddings().weight
    evaluator.update(split, stats, batch)


def compute_token_metrics(
    metrics: Sequence[UnlearningMetric], documents: dict[str, SplitDocuments]
) -> MetricResult:
    """Run every token metric of ``metrics`` on ``documents`` and merge their results."""
    merged = MetricResult()
    for metric in metrics:
        if not isinstance(metric, TokenMetric):
            continue
        result = metric.compute(documents)
        clash = set(result.values) & set(merged.values)
        if clash:
            raise ValueError(
                f"metric {metric.name} returns {sorted(clash)}, already returned by another "
                "metric: give it other names"
            )
        merged.values.update(result.values)
        for split, columns in result.documents.items():
            merged.documents.setdefault(split, {}).update(columns)
    return merged


class UnlearningEvaluator:
    """Per-token statistics in, the configured token metrics' values out.

    ``compute()`` returns the flat values of every token metric as 0-d tensors (a split that was
    not evaluated is absent; an attack without its input, e.g. zlib without ``zlib_len``, is NaN)
    and keeps the values and per-document values of the last computation in :attr:`last`.

    Args:
        splits: names of the evaluation splits (an update of another split is an error).
        metrics: the metrics; only token metrics (``needs == "tokens"``) are computed here.
            Default: :func:`~lightning_unlearn.evaluation.base.default_metrics`.
    """

    def __init__(
        self,
        splits: Sequence[str] = EVAL_SPLITS,
        *,
        metrics: Sequence[UnlearningMetric] | None = None,
    ) -> None:
        self.splits = tuple(splits)
        if not self.splits:
            raise ValueError("UnlearningEvaluator needs at least one split name")
        self.metrics = list(default_metrics() if metrics is None else metrics)
        self.collector = DocumentCollector()
        self.last = MetricResult()
        self.last_documents: dict[str, SplitDocuments] = {}

    @property
    def hidden_splits(self) -> set[str]:
        """Splits whose last hidden states a configured metric reads (``TokenMetric.hidden_splits``)."""
        return {s for m in self.metrics for s in (getattr(m, "hidden_splits", None) or ())}

    def update(self, split: str, stats: dict[str, Tensor], batch: dict | None = None) -> None:
        """Add one batch of split ``split`` (its ``doc_index``/``zlib_len`` when it carries them)."""
        if split not in self.splits:
            raise KeyError(f"unknown evaluation split {split!r}; expected one of {self.splits}")
        self.collector.update(split, stats, batch)

    def compute(self, *, exclude: dict[str, Any] | None = None) -> dict[str, Tensor]:
        """The metrics' values; ``exclude``: ``{split: doc_index values}`` left out (e.g. the
        forget documents an attack trained on)."""
        documents = self.collector.documents()
        for split, drop in (exclude or {}).items():
            if split in documents and drop:
                documents[split] = documents[split].without(drop)
        self.last_documents = documents
        self.last = compute_token_metrics(self.metrics, self.last_documents)
        return {key: torch.tensor(float(value)) for key, value in self.last.values.items()}

    def reset(self) -> None:
        self.collector.reset()
