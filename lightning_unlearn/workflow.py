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

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from .data.protocol import UnlearningData
from .evaluation.base import UnlearningMetric
from .evaluation.metrics import default_metrics
from .evaluation.targets import DocumentTargeting
from .measuring import Measurement, Measurer
from .run_record import PhaseTimer, ReportWriter
from .score_cache import MeasurementCache
from .training_checks import TrainingChecks

log = logging.getLogger(__name__)

__all__ = ["Measurement", "UnlearningWorkflow"]


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
        documents: per-document targets, stop and mask (:class:`.DocumentTargeting`); ``None``:
            the forget split's mean perplexity against the approximate-retrain target.
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
        documents: DocumentTargeting | None = None,
        verbose: bool = True,
    ) -> None:
        super().__init__()
        self.training = TrainingChecks(
            stop_at_target=stop_at_target,
            target_ppl=target_ppl,
            tolerance=tolerance,
            halt=halt,
            monitor_split=monitor_split,
            reference_split=reference_split,
            checks=checks,
            check_every=check_every,
            verbose=verbose,
            documents=documents,
        )
        self.stop, self.schedule = self.training.stop, self.training.schedule
        self.target_ppl, self.halt, self.verbose = target_ppl, halt, verbose
        self.measure_at_steps = sorted({int(s) for s in measure_at_steps})
        self.monitor_split, self.reference_split = monitor_split, reference_split
        self.metrics = list(default_metrics() if metrics is None else metrics)
        # collaborators: measuring (second models too), the score cache, the clock, the report
        self.measurer = Measurer(self.metrics, verbose=verbose)
        self.cache = MeasurementCache(score_cache, verbose=verbose)
        self.timer = PhaseTimer()
        self.seconds = self.timer.seconds  #: wall seconds by phase: before, checks, after
        self.reports = ReportWriter(self.metrics, monitor_split, reference_split)
        self.before: Measurement | None = None
        self.after: Measurement | None = None
        self.measurements: dict[Any, Measurement] = {}
        self.train_seconds, self.train_tokens = 0.0, 0  # of the training steps alone
        self._steps_done: int | None = None
        #: where fit's before-measurement was read from (``None``: measured by this run)
        self.before_reused: str | None = None

    # ------------------------------------------------------------------ the collaborators' state
    @property
    def checks(self) -> list[dict[str, Any]]:
        """Every check during fit: ``{"step", "ppl", "train_seconds", "tokens"}``."""
        return self.training.checks

    @checks.setter
    def checks(self, checks: list[dict[str, Any]]) -> None:
        self.training.checks = checks

    @property
    def score_cache(self) -> Path | None:
        """The folder of the score cache (``None``: none); may be set before :meth:`begin`."""
        return self.cache.folder

    @score_cache.setter
    def score_cache(self, folder: str | Path | None) -> None:
        self.cache.folder = None if folder is None else Path(folder)

    @property
    def stop_step(self) -> int | None:
        """The step at which the stop fired (or would have, ``halt=False``); ``None``: not yet."""
        return self.training.stop_step

    def load(self, path: str, *, gguf_file: str | None = None) -> torch.nn.Module:
        """The causal LM at ``path`` in eval mode, loaded once per workflow."""
        return self.measurer.load(path, gguf_file=gguf_file)

    # ------------------------------------------------------------------ measuring
    def attach(
        self, module: LightningModule, datamodule: UnlearningData, *, checks: bool = False
    ) -> None:
        """Give the module's evaluator the token metrics (for the checks, those without hidden
        states) and the data module its check split."""
        self.measurer.attach(module, datamodule, checks=checks, check_split=self.monitor_split)

    def measure(
        self, trainer: Trainer, module: LightningModule, datamodule: UnlearningData
    ) -> Measurement:
        """Every metric of the model ``module`` trains, on every evaluation split: the token
        metrics through ``trainer.validate`` (any strategy), then the generation and second-model
        metrics."""
        self.attach(module, datamodule)
        trainer.validate(module, datamodule=datamodule, verbose=False)
        evaluator = module.evaluator
        return self.measurer.complete(evaluator.last, evaluator.last_documents, module, datamodule)

    def measure_checkpoint(
        self,
        model: str | Path | torch.nn.Module,
        datamodule: UnlearningData,
        *,
        gguf_file: str | None = None,
        generation: bool = True,
        splits: Sequence[str] | None = None,
        exclude: Mapping[str, Any] | None = None,
    ) -> Measurement:
        """Every metric of a fixed checkpoint (folder, hub id, GGUF file or loaded model) on the
        evaluation ``splits`` (``None``: all), cached in ``score_cache`` when set; without the
        text-generating metrics with ``generation=False``; ``exclude`` (``{split: doc_index
        values}``) leaves documents out of every metric (those an attack trained on)."""
        key = None
        if not isinstance(model, torch.nn.Module) and splits is None and not exclude:
            key = self.cache.path(str(model), datamodule, self.metrics, generation)
        measurement = self.cache.read(key)
        if measurement is None:
            options = dict(gguf_file=gguf_file, splits=splits, exclude=exclude)
            measurement = self.measurer.checkpoint(
                model, datamodule, generation=generation, **options
            )
            self.cache.write(key, measurement)
        return measurement

    # ------------------------------------------------------------------ before / after
    def begin(
        self,
        trainer: Trainer,
        module: LightningModule,
        datamodule: UnlearningData,
        *,
        before: Measurement | None = None,
    ) -> Measurement:
        """Measure the model before unlearning (or take ``before``) and fix the target."""
        self.timer.start()
        if before is None:  # one process only: every rank must take the same decision
            before = self.cache.read_before(module, datamodule, self.metrics, trainer.world_size)
            if before is not None:
                self.before_reused = str(self.cache.before_file)
        self.before = before if before is not None else self.measure(trainer, module, datamodule)
        if self.before_reused is None:
            self.cache.write(self.cache.before_file, self.before)
        self.seconds["before"] = self.timer.since_start()
        self.attach(module, datamodule, checks=True)
        self.target_ppl = self.training.start(
            self.before, datamodule, self.metrics, target_ppl=self.target_ppl
        )
        if self.training.documents is not None:
            self.training.documents.begin(self, module, datamodule)
        return self.before

    def run(
        self, trainer: Trainer, module: LightningModule, datamodule: UnlearningData, **options: Any
    ) -> dict[str, Any]:
        """The whole workflow: :meth:`begin` (``before``), ``trainer.fit``, :meth:`finish` (the
        other ``options``: ``output_dir``, ``export``, ``columns``, ``method``, ``extra``)."""
        self.begin(trainer, module, datamodule, before=options.pop("before", None))
        trainer.fit(module, datamodule=datamodule)
        return self.finish(trainer, module, datamodule, **options)

    def history(self) -> list[dict[str, Any]]:
        """What the plot draws: step 0 (before), each check, the last step (after)."""
        return self.reports.history(self.before, self.checks, self.after, self._steps_done)

    def finish(
        self,
        trainer: Trainer,
        module: LightningModule,
        datamodule: UnlearningData,
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
        with self.timer.phase("after"):
            self.after = self.measure(trainer, module, datamodule)
        run = self.reports.fit_extra(
            self.training.summary(), self.train_seconds, self.seconds, self.before_reused, module
        )
        report = self.report(
            model=str(getattr(module, "model_name_or_path", "")),
            method=method or type(module).__name__,
            steps=self._steps_done,
            seconds=self.timer.since_start(),
            columns=columns,
            extra={**run, **dict(extra or {})},
        )
        if output_dir is not None:
            self.reports.publish(report, trainer, module, datamodule, output_dir, export=export)
        return report

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
        run = dict(model=model, method=method, steps=steps, seconds=seconds, columns=columns)
        before = before if before is not None else self.before
        after = after if after is not None else self.after
        history = self.history()
        report = self.reports.build(before, after, self.target_ppl, history, extra=extra, **run)
        return self.training.annotate(report)

    # ------------------------------------------------------------------ Lightning hooks
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.attach(pl_module, trainer.datamodule, checks=True)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.training.on_train_start(trainer, pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.timer.step_started()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train_seconds += self.timer.step_ended()
        self.train_tokens += _tokens(batch)
        step = int(trainer.global_step)
        if step in self.measure_at_steps and step not in self.measurements:
            self.measurements[step] = self.measurer.in_training(trainer, pl_module)
        self.training.after_step(trainer, step)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.timer.check_started()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        fitting = getattr(trainer.state, "fn", "") == "fit"
        self.timer.check_ended(count=fitting)
        if getattr(trainer, "sanity_checking", False) or not fitting:
            return
        seconds, tokens = self.train_seconds, self.train_tokens
        fired = self.training.record(
            trainer, pl_module.evaluator, train_seconds=seconds, tokens=tokens
        )
        if fired and not self.halt:
            self.measurements["stop"] = self.measurer.in_training(trainer, pl_module)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        before = None if self.before is None else self.before.to_json()
        tokens = {"train_seconds": self.train_seconds, "train_tokens": self.train_tokens}
        return {"target_ppl": self.target_ppl, "before": before, **self.training.state_dict(tokens)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.target_ppl = state_dict.get("target_ppl", self.target_ppl)
        if state_dict.get("before") is not None:
            self.before = Measurement.from_json(state_dict["before"])
        self.training.load_state_dict(state_dict)
        self.train_seconds = float(state_dict.get("train_seconds", 0.0))
        self.train_tokens = int(state_dict.get("train_tokens", 0))


def _tokens(batch: Any) -> int:
    """Tokens (attention-mask ones) of a training batch ``{"forget": ..., "retain": ...}``."""
    if isinstance(batch, Mapping):
        total = 0
        for part in batch.values():
            if isinstance(part, Mapping) and "attention_mask" in part:
                total += int(part["attention_mask"].sum())
        return total
    return 0
