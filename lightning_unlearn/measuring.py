"""Measuring a model with every configured metric: :class:`Measurement` (the values and the
per-document columns of one model) and :class:`Measurer`, which completes the token metrics with
the metrics that generate text and those that read a second model, and loads each fixed checkpoint
(a metric's second model, a model an attack starts from) once.

The :class:`~lightning_unlearn.workflow.UnlearningWorkflow` measures through it; it decides
*when* to measure, this module *what* a measurement holds.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .data.protocol import UnlearningData
from .evaluation.base import MetricResult, ModelMetric, SplitTexts, UnlearningMetric
from .evaluation.metrics import EVAL_SPLITS
from .evaluation.runner import evaluate_model

log = logging.getLogger(__name__)

__all__ = ["Measurement", "Measurer", "finite"]


def finite(value: Any) -> float | None:
    """``value`` as a float, ``None`` when it is missing or not finite."""
    return float(value) if value is not None and math.isfinite(float(value)) else None


@dataclass
class Measurement:
    """Every configured metric on one model: flat values and per-document values per split."""

    values: dict[str, float] = field(default_factory=dict)
    documents: dict[str, dict[str, list]] = field(default_factory=dict)

    def merge(self, result: MetricResult, doc_index: Mapping[str, list[int]]) -> None:
        self.values.update(result.values)
        for split, columns in result.documents.items():
            # a metric with documents of its own (a QA benchmark's questions) gives their index
            index = columns.get("doc_index", doc_index.get(split, []))
            entry = self.documents.setdefault(split, {"doc_index": list(index)})
            entry.update(columns)

    def to_json(self) -> dict[str, Any]:
        return {"values": self.values, "documents": self.documents}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Measurement:
        return cls(dict(data["values"]), {k: dict(v) for k, v in data["documents"].items()})

    def split_ppl(self) -> dict[str, float | None]:
        """``{"forget": ppl, ...}`` of the four splits (``None`` where not measured)."""
        return {s: finite(self.values.get(f"{s}/ppl")) for s in EVAL_SPLITS}


class Measurer:
    """Every metric of ``metrics`` on a model, by kind (``needs``): the token metrics' results
    completed with the generation and second-model metrics.

    Args:
        metrics: the metrics (the workflow's list: read at each call).
        verbose: log the measurements taken in the middle of training.
    """

    def __init__(self, metrics: list[UnlearningMetric], *, verbose: bool = True) -> None:
        self.metrics, self.verbose = metrics, verbose
        self._models: dict[str, torch.nn.Module] = {}
        self._other_documents: dict[str, Any] = {}

    def of_kind(self, kind: str) -> list[UnlearningMetric]:
        return [m for m in self.metrics if m.needs == kind]

    def attach(
        self, module: Any, datamodule: UnlearningData, *, checks: bool, check_split: str
    ) -> None:
        """Give ``module``'s evaluator the token metrics (``checks``: those that need no hidden
        states) and the data module its check split."""
        evaluator = getattr(module, "evaluator", None)
        if evaluator is not None:
            metrics = self.of_kind("tokens")
            if checks:
                metrics = [m for m in metrics if not getattr(m, "hidden_splits", ())]
            evaluator.metrics = metrics
        if hasattr(datamodule, "check_splits"):
            datamodule.check_splits = (check_split,)

    def load(self, path: str, *, gguf_file: str | None = None) -> torch.nn.Module:
        """The causal LM at ``path`` in eval mode, loaded once."""
        if path not in self._models:
            from .models import load_causal_lm

            self._models[path] = load_causal_lm(path, gguf_file=gguf_file).eval()
        return self._models[path]

    def checkpoint(
        self, model: str | os.PathLike | torch.nn.Module, datamodule: UnlearningData, **options: Any
    ) -> Measurement:
        """Every metric of a fixed checkpoint (a path, loaded once, or a model); ``options``:
        ``gguf_file``, ``generation``, ``splits``, ``exclude`` as
        ``UnlearningWorkflow.measure_checkpoint`` takes them."""
        gguf_file, generation = options.get("gguf_file"), options.get("generation", True)
        splits, exclude = options.get("splits"), options.get("exclude")
        path = None if isinstance(model, torch.nn.Module) else str(model)
        loaded = model if path is None else self.load(path, gguf_file=gguf_file)
        exclude = {k: set(v) for k, v in (exclude or {}).items()}
        loaders = datamodule.eval_loaders(splits)
        evaluator = evaluate_model(loaded, loaders, metrics=self.of_kind("tokens"), exclude=exclude)
        if path is not None and splits is None and not exclude:
            # a second-model metric naming this model reads these
            self._other_documents.setdefault(path, evaluator.last_documents)
        return self.complete(
            evaluator.last,
            evaluator.last_documents,
            loaded,
            datamodule,
            generation=generation,
            exclude=exclude,
        )

    def in_training(self, trainer: Any, pl_module: Any) -> Measurement:
        """A full measurement in the middle of training (one process: a plain forward pass)."""
        if trainer.world_size > 1:
            raise RuntimeError(
                "measurements in the middle of training (measure_at_steps, halt=False) run on one "
                "process; use trainer.devices=1"
            )
        datamodule = trainer.datamodule
        loaders = datamodule.eval_loaders()
        evaluator = evaluate_model(pl_module, loaders, metrics=self.of_kind("tokens"))
        out = self.complete(evaluator.last, evaluator.last_documents, pl_module, datamodule)
        if self.verbose:
            log.info("step %d: measured %s", trainer.global_step, out.split_ppl())
        return out

    def complete(
        self,
        tokens: MetricResult,
        documents: Mapping[str, Any],
        model: Any,
        datamodule: UnlearningData,
        *,
        generation: bool = True,
        exclude: Mapping[str, set] | None = None,
    ) -> Measurement:
        """The token metrics' ``tokens`` (per-document ``documents``) with the generation
        metrics (unless ``generation=False``) and the second-model metrics added."""
        doc_index = {split: docs.doc_index for split, docs in documents.items()}
        exclude = exclude or {}
        out = Measurement()
        out.merge(tokens, doc_index)
        generators = self.of_kind("generation") if generation else []
        if generators:
            net = _causal_lm(model)
            for metric in generators:
                splits = EVAL_SPLITS if metric.splits is None else metric.splits
                texts = {
                    s: _without(datamodule.eval_texts(s), exclude.get(s))
                    for s in splits
                    if s in documents
                }
                result = metric.compute(net, datamodule.tokenizer, texts)
                out.merge(result, {s: t.doc_index for s, t in texts.items()})
        for metric in self.of_kind("model"):
            # without a second model the metric gets None (it may skip, or use a stand-in)
            other = self._other(metric, datamodule)
            if other is not None and exclude:
                other = {s: d.without(exclude.get(s, ())) for s, d in other.items()}
            out.merge(metric.compute(documents, other), doc_index)
        return out

    def _other(self, metric: ModelMetric, datamodule: UnlearningData):
        """The second model's per-document statistics on the same data (scored once)."""
        path = getattr(metric, "model_name_or_path", None)
        if path is None:
            return None
        if path not in self._other_documents:
            splits = getattr(metric, "splits", None)
            if splits is not None:
                splits = [s for s in splits if s in datamodule.eval_sources]
            evaluator = evaluate_model(self.load(path), datamodule.eval_loaders(splits), metrics=[])
            self._other_documents[path] = evaluator.last_documents
        return self._other_documents[path]


def _without(texts: SplitTexts, drop: Any) -> SplitTexts:
    """``SplitTexts`` minus the documents in ``drop``."""
    if not drop:
        return texts
    keep = [i for i, d in enumerate(texts.doc_index) if d not in drop]
    return SplitTexts(
        texts.split,
        [texts.doc_index[i] for i in keep],
        [texts.input_ids[i] for i in keep],
        [texts.texts[i] for i in keep],
    )


def _causal_lm(model: Any) -> torch.nn.Module:
    """The network to generate with: an UnlearningModule's model (adapters active), or a model."""
    inner = getattr(model, "model", None)
    return (
        inner if isinstance(inner, torch.nn.Module) and hasattr(model, "training_step") else model
    )
