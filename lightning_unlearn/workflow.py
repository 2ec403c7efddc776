"""The unlearning workflow, in one place: measure before, fix the target, train with cheap checks,
stop, measure after, report, export.

``fit`` on the command line, ``evaluate``, the demo and every benchmark run through
:class:`UnlearningWorkflow`, a Lightning callback with a few methods around ``trainer.fit``::

    workflow = UnlearningWorkflow(metrics=None, tolerance=0.05)      # default metrics
    trainer = L.Trainer(callbacks=[workflow], val_check_interval=1, check_val_every_n_epoch=None)
    report = workflow.run(trainer, module, datamodule, output_dir="outputs/run")

What it owns:

* **before**: every configured metric on every evaluation split of the model handed to it
  (:meth:`measure`, through ``trainer.validate`` so it runs under any strategy, ZeRO-3 included),
  plus the metrics that generate text or read a second model;
* **the target**: the approximate-retrain perplexity (the original model's perplexity on the
  unseen ``approximate`` split), unless given;
* **the checks** during training: validation during ``fit`` scores only the split the stop reads
  (``datamodule.check_splits``), through the token metrics alone;
* **the stop** (:class:`~lightning_unlearn.evaluation.ApproximateRetrainStopping`), or with
  ``halt=False`` the place it would have stopped, measured in full while training goes on;
* **after**, the history the plot draws (step 0 = before, the checks, the last step = after),
  ``report.json`` / ``report.md`` / ``perplexity.png`` and the exported model, published together
  (:func:`~lightning_unlearn.io.staged_outputs`).

A fixed checkpoint (an original model, an exact-retrain model, ``evaluate --compare``) is measured
with :meth:`measure_checkpoint`; its values can be cached (``score_cache``) by its weights' files,
the data and the metrics.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from .data.cache import splits_fingerprint
from .evaluation.base import MetricResult, ModelMetric, UnlearningMetric
from .evaluation.callbacks import ApproximateRetrainStopping
from .evaluation.metrics import EVAL_SPLITS, default_metrics
from .evaluation.report import build_report, format_markdown_table, write_report
from .evaluation.results import approximate_target
from .evaluation.runner import evaluate_model
from .evaluation.schedule import AdaptiveChecks
from .evaluation.targets import TARGET_KINDS, DocumentStopping, DocumentTargeting
from .io import atomic_write_json, content_fingerprint, staged_outputs
from .version import __version__

log = logging.getLogger(__name__)

__all__ = ["Measurement", "UnlearningWorkflow"]

#: a ``val_check_batch`` no step count reaches: no validation after this step
_NO_CHECK = 2**62


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
        return {s: _finite(self.values.get(f"{s}/ppl")) for s in EVAL_SPLITS}


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


class UnlearningWorkflow(Callback):
    """The unlearning workflow as a Lightning callback (see the module docstring).

    Args:
        metrics: the metrics to report (token, generation and second-model metrics); default
            :func:`~lightning_unlearn.evaluation.metrics.default_metrics`.
        stop_at_target: stop once the forget perplexity reaches the approximate-retrain target
            (the paper's tuning guideline); ``False`` trains for the Trainer's budget.
        target_ppl: the target; ``None`` takes the approximate perplexity measured before.
        tolerance: stop once forget ppl >= target * (1 - tolerance).
        halt: stop training at the target (``True``); ``False`` measures the model where it
            would have stopped (``measurements["stop"]``) and trains on (benchmarks).
        measure_at_steps: optimizer steps after which the model is measured in full while it
            trains (``measurements[step]``; one process only).
        monitor_split: the split whose perplexity the stop reads (and the checks score).
        reference_split: the split whose original perplexity is the target.
        score_cache: a folder where measurements of fixed checkpoints are kept (``None``: none).
        checks: ``"adaptive"`` (default): with a Trainer that may check after every step
            (``val_check_interval=1``, ``check_val_every_n_epoch=None``), a full check runs only
            when a prediction from the checks so far says the target may be reached
            (:class:`~lightning_unlearn.evaluation.schedule.AdaptiveChecks`), plus every
            ``check_every`` steps; ``"fixed"``: every validation the Trainer schedules. Any other
            Trainer schedule is kept as it is.
        check_every: the adaptive schedule's safety net, in steps.
        targets: ``"mean"`` (default): the stop reads the forget split's mean perplexity against
            the approximate-retrain target; ``"documents"``: every forget document gets a target
            of its own (:mod:`~lightning_unlearn.evaluation.targets`), the module gets them
            (``module.document_targets``, read by per-document methods), the stop is
            :class:`~lightning_unlearn.evaluation.targets.DocumentStopping` (checks as the
            Trainer schedules them: every step with ``val_check_interval=1``) and the report shows
            each forget document's target.
        reference_model: with ``targets="documents"``: a model that never saw the forget
            documents (the checkpoint before fine-tuning; a path, or its measurement): targets
            are its per-document log-likelihoods plus the approximate split's shift. ``None``:
            quantile matching on the approximate split.
        document_mask: with ``targets="documents"``: forget documents at their target leave the
            forget term (any method), refreshed at every check.
        patience: with ``targets="documents"``: checks without a larger fraction of documents
            inside their band before the stop.
        verbose: log the target, the stop and the measurements.
    """

    def __init__(
        self,
        *,
        metrics: Sequence[UnlearningMetric] | None = None,
        stop_at_target: bool = True,
        target_ppl: float | None = None,
        tolerance: float = 0.0,
        halt: bool = True,
        measure_at_steps: Sequence[int] = (),
        monitor_split: str = "forget",
        reference_split: str = "approximate",
        score_cache: str | Path | None = None,
        checks: str = "adaptive",
        check_every: int = 10,
        targets: str = "mean",
        reference_model: str | Path | Measurement | None = None,
        document_mask: bool = False,
        patience: int = 2,
        verbose: bool = True,
    ) -> None:
        super().__init__()
        if checks not in ("adaptive", "fixed"):
            raise ValueError(f"checks must be 'adaptive' or 'fixed', got {checks!r}")
        if targets not in TARGET_KINDS:
            raise ValueError(f"targets must be one of {TARGET_KINDS}, got {targets!r}")
        if targets == "mean" and (reference_model is not None or document_mask):
            raise ValueError(
                "reference_model and document_mask are options of per-document targets: set "
                "targets='documents'"
            )
        self.schedule = AdaptiveChecks(every=check_every) if checks == "adaptive" else None
        self._adaptive = False  # the schedule is in force for this fit
        self.metrics = list(default_metrics() if metrics is None else metrics)
        self.stop = (
            ApproximateRetrainStopping(
                target_ppl=target_ppl,
                tolerance=tolerance,
                monitor_split=monitor_split,
                reference_split=reference_split,
                verbose=verbose,
            )
            if stop_at_target and targets == "mean"
            else None
        )
        self.documents = None
        if targets == "documents":
            if stop_at_target:
                self.stop = DocumentStopping(patience=patience, monitor_split=monitor_split)
            self.documents = DocumentTargeting(
                reference=reference_model,
                mask=document_mask,
                stop=self.stop,
                monitor_split=monitor_split,
                reference_split=reference_split,
            )
        self.target_ppl = target_ppl
        self.halt = halt
        self.measure_at_steps = sorted({int(s) for s in measure_at_steps})
        self.monitor_split, self.reference_split = monitor_split, reference_split
        self.score_cache = None if score_cache is None else Path(score_cache)
        self.verbose = verbose
        self.before: Measurement | None = None
        self.after: Measurement | None = None
        self.measurements: dict[Any, Measurement] = {}
        self.checks: list[dict[str, Any]] = []
        self.train_seconds = 0.0
        self.train_tokens = 0
        #: wall seconds by phase: "before", "checks" (validation during fit), "after"
        self.seconds: dict[str, float] = {"before": 0.0, "checks": 0.0, "after": 0.0}
        self._check_started: float | None = None
        self._models: dict[str, torch.nn.Module] = {}
        self._other_documents: dict[str, Any] = {}
        self._started: float | None = None
        self._step_started: float | None = None
        self._stop_step: int | None = None
        self._steps_done: int | None = None
        #: where fit's before-measurement was read from (``None``: measured by this run)
        self.before_reused: str | None = None
        self._before_cache: Path | None = None

    # ------------------------------------------------------------------ metrics by kind
    def _of_kind(self, kind: str) -> list[UnlearningMetric]:
        return [m for m in self.metrics if m.needs == kind]

    def attach(self, module: LightningModule, datamodule: Any, *, checks: bool = False) -> None:
        """Give the module's evaluator the token metrics (for the checks during training, those
        that need no hidden states: the stop reads perplexity) and the data module its check
        split."""
        evaluator = getattr(module, "evaluator", None)
        if evaluator is not None:
            metrics = self._of_kind("tokens")
            if checks:
                metrics = [m for m in metrics if not getattr(m, "hidden_splits", ())]
            evaluator.metrics = metrics
        if hasattr(datamodule, "check_splits"):
            datamodule.check_splits = (self.monitor_split,)

    # ------------------------------------------------------------------ measuring
    def measure(self, trainer: Trainer, module: LightningModule, datamodule: Any) -> Measurement:
        """Every metric of the model ``module`` trains, on every evaluation split: the token
        metrics through ``trainer.validate`` (any strategy), then the generation and second-model
        metrics."""
        self.attach(module, datamodule)
        trainer.validate(module, datamodule=datamodule, verbose=False)
        evaluator = module.evaluator
        return self._complete(evaluator.last, evaluator.last_documents, module, datamodule)

    def measure_checkpoint(
        self,
        model: str | Path | torch.nn.Module,
        datamodule: Any,
        *,
        gguf_file: str | None = None,
        generation: bool = True,
        splits: Sequence[str] | None = None,
        exclude: Mapping[str, Any] | None = None,
    ) -> Measurement:
        """Every metric of a fixed checkpoint (folder, hub id, GGUF file or a loaded model) on
        the evaluation ``splits`` of ``datamodule`` (``None``: all); cached in ``score_cache``
        when set. With ``generation=False`` the metrics that generate text are left out (a side
        column); ``exclude`` (``{split: doc_index values}``) leaves documents out of every metric
        (the forget documents an attack trained on)."""
        path = None if isinstance(model, torch.nn.Module) else str(model)
        plain = splits is None and not exclude
        cache = (
            self._cache_path(path, datamodule, generation) if path is not None and plain else None
        )
        if cache is not None and cache.is_file():
            return Measurement.from_json(json.loads(cache.read_text()))
        loaded = model if path is None else self.load(path, gguf_file=gguf_file)
        exclude = {k: set(v) for k, v in (exclude or {}).items()}
        evaluator = evaluate_model(
            loaded, datamodule.eval_loaders(splits), metrics=self._of_kind("tokens"),
            exclude=exclude,
        )  # fmt: skip
        if path is not None and plain:  # a second-model metric naming this model reads these
            self._other_documents.setdefault(path, evaluator.last_documents)
        measurement = self._complete(
            evaluator.last, evaluator.last_documents, loaded, datamodule, generation=generation,
            exclude=exclude,
        )  # fmt: skip
        if cache is not None:
            atomic_write_json(cache, measurement.to_json())
        return measurement

    def _complete(
        self,
        tokens: MetricResult,
        documents: Mapping[str, Any],
        model: Any,
        datamodule: Any,
        *,
        generation: bool = True,
        exclude: Mapping[str, set] | None = None,
    ) -> Measurement:
        doc_index = {split: docs.doc_index for split, docs in documents.items()}
        out = Measurement()
        out.merge(tokens, doc_index)
        generators = self._of_kind("generation") if generation else []
        if generators:
            net = _causal_lm(model)
            for metric in generators:
                splits = EVAL_SPLITS if metric.splits is None else metric.splits
                texts = {s: _without(datamodule.eval_texts(s), (exclude or {}).get(s))
                         for s in splits if s in documents}  # fmt: skip
                result = metric.compute(net, datamodule.tokenizer, texts)
                out.merge(result, {s: t.doc_index for s, t in texts.items()})
        for metric in self._of_kind("model"):
            # without a second model the metric gets None (it may skip, or use a stand-in)
            other = self._other(metric, datamodule)
            if other is not None and exclude:
                other = {s: d.without(exclude.get(s, ())) for s, d in other.items()}
            out.merge(metric.compute(documents, other), doc_index)
        return out

    def _other(self, metric: ModelMetric, datamodule: Any):
        """The second model's per-document statistics on the same data (scored once)."""
        path = getattr(metric, "model_name_or_path", None)
        if path is None:
            return None
        if path not in self._other_documents:
            splits = getattr(metric, "splits", None)
            loaders = datamodule.eval_loaders(
                None if splits is None else [s for s in splits if s in datamodule.eval_sources]
            )
            evaluator = evaluate_model(self.load(path), loaders, metrics=[])
            self._other_documents[path] = evaluator.last_documents
        return self._other_documents[path]

    @property
    def stop_step(self) -> int | None:
        """The step at which the stop fired (``halt=True``) or would have (``halt=False``);
        ``None`` before it did."""
        return self._stop_step

    def load(self, path: str, *, gguf_file: str | None = None) -> torch.nn.Module:
        """The causal LM at ``path`` in eval mode, loaded once per workflow (a fixed checkpoint
        the workflow measures or attacks)."""
        if path not in self._models:
            from .models import load_causal_lm

            self._models[path] = load_causal_lm(path, gguf_file=gguf_file).eval()
        return self._models[path]

    def _cache_path(
        self, path: str, datamodule: Any, generation: bool = True, **extra: Any
    ) -> Path | None:
        """Where the measurement of the model at ``path`` on ``datamodule`` is kept: keyed on the
        *content* of the model's weight files and of every evaluation split (token ids and
        texts), the metrics, whether generation runs and ``extra``, never on names or dates. A
        model that is no local file or folder (a hub id) is not cached."""
        if self.score_cache is None:
            return None
        weights = content_fingerprint(path, memo=self.score_cache / "file-hashes.json")
        if weights is None:
            return None
        key = json.dumps(
            [weights, splits_fingerprint(datamodule), [m.describe() for m in self.metrics],
             generation, extra, __version__],
            sort_keys=True, default=str,
        )  # fmt: skip
        return self.score_cache / f"scores-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"

    # ------------------------------------------------------------------ before / after
    def begin(
        self,
        trainer: Trainer,
        module: LightningModule,
        datamodule: Any,
        *,
        before: Measurement | None = None,
    ) -> Measurement:
        """Measure the model before unlearning (or take ``before``) and fix the target."""
        self._started = time.perf_counter()
        if before is None:
            before = self._cached_before(trainer, module, datamodule)
        self.before = before if before is not None else self.measure(trainer, module, datamodule)
        if self._before_cache is not None and self.before_reused is None:
            atomic_write_json(self._before_cache, self.before.to_json())
        self.seconds["before"] = time.perf_counter() - self._started
        self.attach(module, datamodule, checks=True)
        if self.target_ppl is None:
            self._require_perplexity(datamodule)
            self.target_ppl = approximate_target(self.before.values, split=self.reference_split)
        if self.stop is not None and self.stop.target_ppl is None:
            self.stop.target_ppl = self.target_ppl
        if self.documents is not None:
            self.documents.begin(self, module, datamodule)
        elif self.schedule is not None and self.stop is not None:
            self.schedule.start(
                threshold_ppl=self.target_ppl * (1.0 - self.stop.tolerance),
                before_ppl=_finite(self.before.values.get(f"{self.monitor_split}/ppl")),
            )
        if self.verbose:
            log.info("approximate-retrain target: %s perplexity %.4f", self.reference_split,
                     self.target_ppl)  # fmt: skip
        return self.before

    def _cached_before(
        self, trainer: Trainer, module: LightningModule, datamodule: Any
    ) -> Measurement | None:
        """The before-measurement of an earlier run on the same model weights, data and metrics
        (``score_cache``; one process only: every rank must take the same decision)."""
        self._before_cache = None
        path = getattr(module, "model_name_or_path", None)
        if self.score_cache is None or path is None or trainer.world_size > 1:
            return None
        gguf = getattr(module, "gguf_file", None)
        source = str(Path(path) / gguf) if gguf else str(path)
        self._before_cache = self._cache_path(
            source, datamodule, kind="before", dtype=getattr(module, "dtype_name", None),
            lora=getattr(module, "lora", None) is not None,
        )  # fmt: skip
        if self._before_cache is None or not self._before_cache.is_file():
            return None
        self.before_reused = str(self._before_cache)
        if self.verbose:
            log.info("before: reused the measurement in %s (same weights, data and metrics)",
                     self._before_cache)  # fmt: skip
        return Measurement.from_json(json.loads(self._before_cache.read_text()))

    def _require_perplexity(self, datamodule: Any) -> None:
        """The target is the reference split's perplexity: name the metric when none made it."""
        key = f"{self.reference_split}/ppl"
        has_split = self.reference_split in getattr(datamodule, "eval_sources", {})
        if key not in self.before.values and has_split:
            raise ValueError(
                f"the approximate-retrain target is the original model's '{key}', which no "
                f"configured metric computes ({[type(m).__name__ for m in self.metrics]}): add "
                "lightning_unlearn.evaluation.Perplexity to the metrics, or give target_ppl"
            )

    def run(
        self,
        trainer: Trainer,
        module: LightningModule,
        datamodule: Any,
        *,
        output_dir: str | Path | None = None,
        export: bool = True,
        before: Measurement | None = None,
        columns: Mapping[str, Measurement] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The whole workflow: :meth:`begin`, ``trainer.fit``, :meth:`finish`."""
        self.begin(trainer, module, datamodule, before=before)
        trainer.fit(module, datamodule=datamodule)
        return self.finish(
            trainer, module, datamodule, output_dir=output_dir, export=export, columns=columns,
            extra=extra,
        )  # fmt: skip

    def history(self) -> list[dict[str, Any]]:
        """What the plot draws: step 0 (before, every split), each check (the monitored split),
        the last step (after, every split; it replaces a check at the same step)."""
        entries = []
        if self.before is not None:
            entries.append({"step": 0, **self.before.split_ppl()})
        for check in self.checks:
            entry = {"step": check["step"], **{s: None for s in EVAL_SPLITS}}
            entry[self.monitor_split] = check["ppl"]
            if entries and entries[-1]["step"] == entry["step"]:
                continue  # a check at step 0 scores what before already has
            entries.append(entry)
        if self.after is not None and self._steps_done is not None:
            last = {"step": self._steps_done, **self.after.split_ppl()}
            if entries and entries[-1]["step"] == last["step"]:
                entries[-1] = last
            else:
                entries.append(last)
        return entries

    def finish(
        self,
        trainer: Trainer,
        module: LightningModule,
        datamodule: Any,
        *,
        output_dir: str | Path | None = None,
        export: bool = True,
        columns: Mapping[str, Measurement] | None = None,
        method: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Measure after, build the report and (with ``output_dir``) publish it and the model."""
        if self.before is None:
            raise RuntimeError("UnlearningWorkflow.finish before begin: no 'before' measurement")
        self._steps_done = int(trainer.global_step)
        started = time.perf_counter()
        self.after = self.measure(trainer, module, datamodule)
        self.seconds["after"] = time.perf_counter() - started
        stopped = self.stop.stopped_step if self.stop is not None else None
        report = self.report(
            model=str(getattr(module, "model_name_or_path", "")),
            method=method or type(module).__name__,
            steps=self._steps_done,
            seconds=time.perf_counter() - (self._started or time.perf_counter()),
            columns=columns,
            extra={
                "stopped_step": stopped if self.halt else self._stop_step,
                "reached_target": (stopped if self.halt else self._stop_step) is not None,
                "train_seconds": self.train_seconds,
                "phase_seconds": {"train_steps": self.train_seconds, **self.seconds},
                "before_reused": self.before_reused,
                "checks": {
                    "schedule": "adaptive" if self._adaptive else "fixed",
                    "count": len(self.checks),
                    "steps": [c["step"] for c in self.checks],
                },  # fmt: skip
                "hyper_parameters": _plain(getattr(module, "hparams", {})),
                **dict(extra or {}),
            },
        )
        if output_dir is not None:
            out = Path(output_dir)
            with staged_outputs(out) as staging:
                if export and hasattr(module, "export"):
                    module.export(staging / "model", overwrite=True)
                if trainer.is_global_zero:
                    write_report(report, staging)
                    if export and (staging / "model").is_dir():
                        self._model_card(staging / "model", report, module, datamodule)
        return report

    @staticmethod
    def _model_card(folder: Path, report: Mapping[str, Any], module: Any, datamodule: Any) -> None:
        """The audit record (``README.md`` in the model folder, :mod:`lightning_unlearn.card`)."""
        from .card import document_hashes, model_card, write_model_card
        from .data.sources import read_documents

        source = getattr(datamodule, "train_sources", {}).get("forget")
        texts = read_documents(source, role="forget") if source is not None else []
        text = model_card(
            report,
            base_model=str(getattr(module, "model_name_or_path", "")),
            forget_hashes=document_hashes(texts),
            hyper_parameters=report.get("hyper_parameters", {}),
            table=format_markdown_table(report),
        )
        write_model_card(folder, text)

    def report(
        self,
        *,
        model: str,
        method: str,
        steps: int,
        seconds: float,
        columns: Mapping[str, Measurement] | None = None,
        before: Measurement | None = None,
        after: Measurement | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The report of ``before`` and ``after`` (default: this run's; more ``columns``) with
        the history; the target is the one fixed at :meth:`begin`, else ``before``'s."""
        before = before if before is not None else self.before
        after = after if after is not None else self.after
        target = self.target_ppl
        if target is None:
            target = approximate_target(before.values, split=self.reference_split)
        columns = dict(columns or {})
        documents = {"before": before.documents, "after": after.documents}
        documents.update({name: m.documents for name, m in columns.items()})
        if self.documents is not None and self.documents.targets is not None:
            documents["targets"] = self.documents.report_columns()
            extra = {**dict(extra or {}), "document_targets": self.documents.targets.to_json()}
        return build_report(
            model=model,
            method=method,
            steps=steps,
            seconds=seconds,
            before=before.values,
            after=after.values,
            target_ppl=target,
            columns={name: m.values for name, m in columns.items()},
            documents={k: v for k, v in documents.items() if v},
            metrics=self.metrics,
            history=self.history(),
            extra=extra,
        )

    # ------------------------------------------------------------------ Lightning hooks
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.attach(pl_module, trainer.datamodule, checks=True)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.stop is not None:
            self.stop.on_train_start(trainer, pl_module)
        # the adaptive schedule chooses among per-step checks: only a Trainer that may check
        # after every optimizer step leaves it the choice
        self._adaptive = (
            self.schedule is not None
            and self.schedule.threshold is not None
            and getattr(trainer, "val_check_batch", None) == 1
            and getattr(trainer, "check_val_every_n_epoch", 0) is None
            and getattr(trainer, "accumulate_grad_batches", 1) == 1
        )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._step_started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._step_started is not None:
            self.train_seconds += time.perf_counter() - self._step_started
            self._step_started = None
        self.train_tokens += _tokens(batch)
        step = int(trainer.global_step)
        if step in self.measure_at_steps and step not in self.measurements:
            self.measurements[step] = self._measure_now(trainer, pl_module)
        if self._adaptive:
            self._schedule_check(trainer, step)

    def _schedule_check(self, trainer, step: int) -> None:
        """Let the Trainer's validation (the check) follow this step only when the adaptive
        schedule says it is due (the decision reduced over processes: any one that asks for a
        check gets it, so all of them run it)."""
        if self._stop_step is not None:
            due = step % self.schedule.every == 0  # the stop is known: the safety net only
        else:
            due = self.schedule.due(step)
        reduce = getattr(trainer.strategy, "reduce_boolean_decision", None)
        if reduce is not None:
            due = bool(reduce(due, all=False))
        trainer.val_check_batch = 1 if due else _NO_CHECK

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._check_started = time.perf_counter()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if getattr(trainer.state, "fn", "") == "fit" and self._check_started is not None:
            self.seconds["checks"] += time.perf_counter() - self._check_started
        self._check_started = None
        if getattr(trainer, "sanity_checking", False) or getattr(trainer.state, "fn", "") != "fit":
            return
        values = pl_module.evaluator.last.values
        step = int(trainer.global_step)
        ppl = _finite(values.get(f"{self.monitor_split}/ppl"))
        self.checks.append({"step": step, "ppl": ppl, "train_seconds": self.train_seconds,
                            "tokens": self.train_tokens})  # fmt: skip
        if self._adaptive:
            self.schedule.record_check(step, ppl)
        if self.documents is not None:
            halt_before = trainer.should_stop
            evaluator, split = pl_module.evaluator, self.monitor_split
            columns = dict(evaluator.last.documents.get(split, {}))
            columns["doc_index"] = evaluator.last_documents[split].doc_index
            reached, within = self.documents.check(trainer, columns)
            self.checks[-1]["within"] = within
        elif self.stop is None:
            return
        else:
            halt_before = trainer.should_stop
            reached = self.stop.check(trainer, {f"val/{k}": v for k, v in values.items()})
        if not self.halt:
            trainer.should_stop = halt_before  # record where it would stop, and train on
        if reached and self._stop_step is None:
            self._stop_step = step
            if not self.halt:
                self.measurements["stop"] = self._measure_now(trainer, pl_module)

    def _measure_now(self, trainer: Trainer, pl_module: LightningModule) -> Measurement:
        """A full measurement in the middle of training (one process: a plain forward pass)."""
        if trainer.world_size > 1:
            raise RuntimeError(
                "measurements in the middle of training (measure_at_steps, halt=False) run on one "
                "process; use trainer.devices=1"
            )
        datamodule = trainer.datamodule
        evaluator = evaluate_model(
            pl_module, datamodule.eval_loaders(), metrics=self._of_kind("tokens")
        )
        out = self._complete(evaluator.last, evaluator.last_documents, pl_module, datamodule)
        if self.verbose:
            log.info("step %d: measured %s", trainer.global_step, out.split_ppl())
        return out

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "target_ppl": self.target_ppl,
            "before": None if self.before is None else self.before.to_json(),
            "checks": list(self.checks),
            "train_seconds": self.train_seconds,
            "train_tokens": self.train_tokens,
            "stop": None if self.stop is None else self.stop.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.target_ppl = state_dict.get("target_ppl", self.target_ppl)
        if state_dict.get("before") is not None:
            self.before = Measurement.from_json(state_dict["before"])
        self.checks = list(state_dict.get("checks", []))
        self.train_seconds = float(state_dict.get("train_seconds", 0.0))
        self.train_tokens = int(state_dict.get("train_tokens", 0))
        if self.stop is not None and state_dict.get("stop") is not None:
            self.stop.load_state_dict(state_dict["stop"])


def _without(texts: Any, drop: Any) -> Any:
    """``SplitTexts`` minus the documents in ``drop``."""
    if not drop:
        return texts
    from .evaluation.base import SplitTexts

    keep = [i for i, d in enumerate(texts.doc_index) if d not in drop]
    return SplitTexts(texts.split, [texts.doc_index[i] for i in keep],
                      [texts.input_ids[i] for i in keep], [texts.texts[i] for i in keep])  # fmt: skip


def _causal_lm(model: Any) -> torch.nn.Module:
    """The network to generate with: an UnlearningModule's model (adapters active), or a model."""
    inner = getattr(model, "model", None)
    return (
        inner if isinstance(inner, torch.nn.Module) and hasattr(model, "training_step") else model
    )


def _tokens(batch: Any) -> int:
    if isinstance(batch, Mapping):
        total = 0
        for part in batch.values():
            if isinstance(part, Mapping) and "attention_mask" in part:
                total += int(part["attention_mask"].sum())
        return total
    return 0


def _plain(hparams: Any) -> dict[str, Any]:
    out = {}
    for key, value in dict(hparams).items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            out[key] = value
        else:
            out[key] = str(value)
    return out
