"""What an unlearning run records: its wall time by phase (:class:`PhaseTimer`), and its history,
report, model card and published outputs (:class:`ReportWriter`).

The :class:`~lightning_unlearn.workflow.UnlearningWorkflow` calls both; neither decides anything
about the run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .data.protocol import UnlearningData
from .evaluation.base import UnlearningMetric
from .evaluation.metrics import EVAL_SPLITS
from .evaluation.report import build_report, format_markdown_table, write_report
from .evaluation.results import approximate_target
from .io import staged_outputs
from .measuring import Measurement

__all__ = ["PhaseTimer", "ReportWriter"]


class PhaseTimer:
    """Wall seconds of a run: ``seconds`` by phase (``"before"``, ``"checks"``: validation during
    fit, ``"after"``), each training step's and the whole run's."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {"before": 0.0, "checks": 0.0, "after": 0.0}
        self._started: float | None = None
        self._step_started: float | None = None
        self._check_started: float | None = None

    def start(self) -> None:
        """The run starts (its ``before`` phase too)."""
        self._started = time.perf_counter()

    def since_start(self) -> float:
        """Seconds since :meth:`start` (``0`` before it)."""
        now = time.perf_counter()
        return now - (self._started if self._started is not None else now)

    @contextmanager
    def phase(self, name: str):
        """Time the block as phase ``name``."""
        started = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - started

    def step_started(self) -> None:
        self._step_started = time.perf_counter()

    def step_ended(self) -> float:
        """Seconds since :meth:`step_started` (``0`` without it)."""
        if self._step_started is None:
            return 0.0
        seconds, self._step_started = time.perf_counter() - self._step_started, None
        return seconds

    def check_started(self) -> None:
        self._check_started = time.perf_counter()

    def check_ended(self, *, count: bool) -> None:
        """A validation ended; ``count``: it was a check during fit (added to ``"checks"``)."""
        if count and self._check_started is not None:
            self.seconds["checks"] += time.perf_counter() - self._check_started
        self._check_started = None


class ReportWriter:
    """The report of a run: its history (what the plot draws), ``report.json`` / ``report.md`` /
    ``perplexity.png``, the exported model and its model card, published together.

    Args:
        metrics: the metrics reported (their order and descriptions).
        monitor_split: the split the checks score.
        reference_split: the split whose original perplexity is the target.
    """

    def __init__(
        self, metrics: Sequence[UnlearningMetric], monitor_split: str, reference_split: str
    ) -> None:
        self.metrics = metrics
        self.monitor_split, self.reference_split = monitor_split, reference_split

    def history(
        self,
        before: Measurement | None,
        checks: Sequence[Mapping[str, Any]],
        after: Measurement | None,
        steps_done: int | None,
    ) -> list[dict[str, Any]]:
        """Step 0 (before, every split), each check (the monitored split), the last step (after,
        every split; it replaces a check at the same step)."""
        entries = []
        if before is not None:
            entries.append({"step": 0, **before.split_ppl()})
        for check in checks:
            entry = {"step": check["step"], **{s: None for s in EVAL_SPLITS}}
            entry[self.monitor_split] = check["ppl"]
            if entries and entries[-1]["step"] == entry["step"]:
                continue  # a check at step 0 scores what before already has
            entries.append(entry)
        if after is not None and steps_done is not None:
            last = {"step": steps_done, **after.split_ppl()}
            if entries and entries[-1]["step"] == last["step"]:
                entries[-1] = last
            else:
                entries.append(last)
        return entries

    @staticmethod
    def fit_extra(
        checks: Mapping[str, Any],
        train_seconds: float,
        seconds: Mapping[str, float],
        before_reused: str | None,
        module: Any,
    ) -> dict[str, Any]:
        """The report's entries about a fit: where it stopped (``checks``: the checks'
        summary), its seconds, the reused before-measurement, the module's hyper-parameters."""
        return {
            "stopped_step": checks["stopped_step"],
            "reached_target": checks["reached_target"],
            "train_seconds": train_seconds,
            "phase_seconds": {"train_steps": train_seconds, **seconds},
            "before_reused": before_reused,
            "checks": checks["checks"],
            "hyper_parameters": _plain(getattr(module, "hparams", {})),
        }

    def build(
        self,
        before: Measurement,
        after: Measurement,
        target_ppl: float | None,
        history: list[dict[str, Any]],
        *,
        model: str,
        method: str,
        steps: int,
        seconds: float,
        columns: Mapping[str, Measurement] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The report of ``before`` and ``after`` (and ``columns``) with ``history``;
        ``target_ppl=None`` takes ``before``'s reference-split perplexity."""
        if target_ppl is None:
            target_ppl = approximate_target(before.values, split=self.reference_split)
        columns = dict(columns or {})
        documents = {"before": before.documents, "after": after.documents}
        documents.update({name: m.documents for name, m in columns.items()})
        return build_report(
            model=model,
            method=method,
            steps=steps,
            seconds=seconds,
            before=before.values,
            after=after.values,
            target_ppl=target_ppl,
            columns={name: m.values for name, m in columns.items()},
            documents={k: v for k, v in documents.items() if v},
            metrics=self.metrics,
            history=history,
            extra=extra,
        )

    def publish(
        self,
        report: Mapping[str, Any],
        trainer: Any,
        module: Any,
        datamodule: UnlearningData,
        output_dir: str | Path,
        *,
        export: bool = True,
    ) -> None:
        """Write the report (rank zero) and the exported model with its card to ``output_dir``,
        all at once (:func:`~lightning_unlearn.io.staged_outputs`)."""
        with staged_outputs(Path(output_dir)) as staging:
            if export and hasattr(module, "export"):
                module.export(staging / "model", overwrite=True)
            if trainer.is_global_zero:
                write_report(report, staging)
                if export and (staging / "model").is_dir():
                    self.model_card(staging / "model", report, module, datamodule)

    @staticmethod
    def model_card(
        folder: Path, report: Mapping[str, Any], module: Any, datamodule: UnlearningData
    ) -> None:
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


def _plain(hparams: Any) -> dict[str, Any]:
    """``hparams`` with every value that is no plain scalar written as its ``str``."""
    out = {}
    for key, value in dict(hparams).items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            out[key] = value
        else:
            out[key] = str(value)
    return out
