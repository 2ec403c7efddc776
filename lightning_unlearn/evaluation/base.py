"""The evaluation seam: a metric is one class that says what it needs and returns named values.

Three kinds, by what they read (``needs``):

* :class:`TokenMetric` (``"tokens"``): the per-token statistics of one forward pass over every
  evaluation split, joined per document (:class:`~lightning_unlearn.evaluation.documents.
  SplitDocuments`). Perplexity and the membership-inference scores are such metrics; they are
  computed on every evaluation, the cheap checks during training included.
* :class:`GenerationMetric` (``"generation"``): the model itself and the splits' documents as
  token ids, for metrics that make the model write (verbatim memorisation, answers to questions).
  Computed before and after unlearning, not during training.
* :class:`ModelMetric` (``"model"``): the per-token statistics of the evaluated model *and* of a
  second model on the same documents (a reference that never saw the forget set, a retrained
  model). The workflow loads the second model once and scores it on the same data.

Every metric returns a :class:`MetricResult`: flat named values (``"forget/ppl"``,
``"mia/loss_auc"``) and, where that makes sense, one value per document of a split. The evaluator,
``report.json``, ``report.md``, the verdict and the CLI table show whatever metrics are configured
(the ``metrics:`` option; :func:`~lightning_unlearn.evaluation.metrics.default_metrics` otherwise): adding a metric is one class.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor

from .documents import SplitDocuments

__all__ = [
    "MetricResult",
    "UnlearningMetric",
    "TokenMetric",
    "GenerationMetric",
    "ModelMetric",
    "SplitTexts",
]


@dataclass
class MetricResult:
    """What one metric computed.

    Attributes:
        values: flat named values, e.g. ``{"forget/ppl": 8.6, "mia/loss_auc": 0.52}``. NaN where a
            value cannot be computed (a split missing from this evaluation).
        documents: per split, per column, one value per document in the order of that split's
            ``doc_index`` (``{"forget": {"ppl": [...]}}``).
    """

    values: dict[str, float] = field(default_factory=dict)
    documents: dict[str, dict[str, list[float]]] = field(default_factory=dict)


@dataclass
class SplitTexts:
    """The documents of one split as the model reads them (for metrics that generate).

    Attributes:
        split: the split's name.
        doc_index: each document's index in its source.
        input_ids: each document's tokens as the data module tokenised it (its first window).
        texts: each document's text (of that window).
    """

    split: str
    doc_index: list[int]
    input_ids: list[list[int]]
    texts: list[str]


class UnlearningMetric:
    """Base of every metric. Subclass one of :class:`TokenMetric`, :class:`GenerationMetric` or
    :class:`ModelMetric` and implement ``compute``; optionally :meth:`label`, :meth:`change` and
    :meth:`verdict` for the report."""

    #: what the metric reads: "tokens", "generation" or "model"
    needs: ClassVar[str] = ""
    #: the first part of the names of the values it returns (``"mia"`` for ``"mia/loss_auc"``)
    prefix: ClassVar[str] = ""

    def owns(self, key: str) -> bool:
        """Whether a flat value name is one this metric returns (the report's rows use it)."""
        return bool(self.prefix) and key.startswith(self.prefix + "/")

    @property
    def name(self) -> str:
        """Shown in the report above the metric's rows."""
        return type(self).__name__

    def label(self, key: str) -> str | None:
        """The row label of one of this metric's values in the report's tables (``None``: the
        value is in ``report.json`` only)."""
        return key

    def change(self, before: float | None, after: float | None) -> str:
        """The table's "after vs before" cell: the difference (override for a relative change)."""
        if before is None or after is None:
            return "—"
        return f"{after - before:+.3f}"

    def verdict(self, report: Mapping[str, Any]) -> list[str]:
        """One-line judgements of the unlearned model (``report["after"]``) by this metric."""
        return []

    def sections(self, report: Mapping[str, Any]) -> list[dict[str, str]]:
        """Sections this metric adds to ``report.md``: ``[{"title": ..., "markdown": ...}]``."""
        return []

    def describe(self) -> dict[str, Any]:
        """The metric as recorded in the report (its class and options)."""
        options = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return {"class": f"{type(self).__module__}.{type(self).__qualname__}", **options}


class TokenMetric(UnlearningMetric):
    """A metric of the per-token statistics of one forward pass (per document, every split)."""

    needs = "tokens"
    #: splits whose last hidden states (and the output projection) the metric also reads; they
    #: are collected in the same forward pass, only for these splits
    hidden_splits: tuple[str, ...] = ()

    def compute(self, documents: Mapping[str, SplitDocuments]) -> MetricResult:
        """Named values from the documents of every evaluated split (some may be missing)."""
        raise NotImplementedError


class GenerationMetric(UnlearningMetric):
    """A metric that runs the model itself on the splits' documents (e.g. to generate text)."""

    needs = "generation"
    #: the splits whose documents it reads (``None``: every split)
    splits: Sequence[str] | None = None

    def compute(self, model: Any, tokenizer: Any, texts: Mapping[str, SplitTexts]) -> MetricResult:
        """Named values from ``model`` (a transformers causal LM, eval mode) on ``texts``."""
        raise NotImplementedError


class ModelMetric(UnlearningMetric):
    """A metric comparing the evaluated model with a second model on the same documents.

    Args:
        model_name_or_path: the second model (local folder, hub id or GGUF file); ``None`` skips
            the metric (its values are absent from the report).
    """

    needs = "model"
    #: the splits the second model must be scored on (``None``: every split)
    splits: Sequence[str] | None = None

    def __init__(self, model_name_or_path: str | None = None) -> None:
        self.model_name_or_path = model_name_or_path

    def compute(
        self,
        documents: Mapping[str, SplitDocuments],
        other: Mapping[str, SplitDocuments] | None,
    ) -> MetricResult:
        """Named values from both models' statistics on the same documents (``other`` is
        ``None`` when no second model was given: skip, or use a stand-in)."""
        raise NotImplementedError


def finite(value: Any) -> float | None:
    """A float, or ``None`` for a missing or non-finite value (strict JSON has no NaN)."""
    if value is None:
        return None
    if isinstance(value, Tensor):
        value = float(value.detach().cpu().item())
    value = float(value)
    return value if math.isfinite(value) else None
