"""The checks during ``fit`` and the stop: :class:`TrainingChecks` records every check of the
monitored split, lets the adaptive schedule choose which steps are checked, asks the stop
(:class:`~lightning_unlearn.evaluation.ApproximateRetrainStopping`) and remembers the step at which
it fired (``halt=True``) or would have (``halt=False``: training goes on).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from .data.protocol import UnlearningData
from .evaluation.base import UnlearningMetric
from .evaluation.callbacks import ApproximateRetrainStopping
from .evaluation.results import approximate_target
from .evaluation.schedule import AdaptiveChecks
from .evaluation.targets import DocumentStopping, DocumentTargeting
from .measuring import Measurement, finite

log = logging.getLogger(__name__)

__all__ = ["TrainingChecks"]


class TrainingChecks:
    """The target, the checks of one fit and where the stop fired.

    Args: see :class:`~lightning_unlearn.workflow.UnlearningWorkflow` (``stop_at_target``,
        ``target_ppl``, ``tolerance``, ``halt``, ``monitor_split``, ``reference_split``,
        ``checks``, ``check_every``, ``verbose``).
    """

    def __init__(
        self,
        *,
        stop_at_target: bool,
        target_ppl: float | None,
        tolerance: float,
        halt: bool,
        monitor_split: str,
        reference_split: str,
        checks: str,
        check_every: int,
        verbose: bool,
        documents: DocumentTargeting | None = None,
    ) -> None:
        if checks not in ("adaptive", "fixed"):
            raise ValueError(f"checks must be 'adaptive' or 'fixed', got {checks!r}")
        self.schedule = AdaptiveChecks(every=check_every) if checks == "adaptive" else None
        self.stop: ApproximateRetrainStopping | DocumentStopping | None = None
        #: per-document targets: their stop replaces the mean-perplexity stop
        self.documents = documents
        if documents is not None:
            documents.bind(
                stop=stop_at_target, monitor_split=monitor_split, reference_split=reference_split
            )
            self.stop = documents.stop
        elif stop_at_target:
            self.stop = ApproximateRetrainStopping(
                target_ppl=target_ppl,
                tolerance=tolerance,
                monitor_split=monitor_split,
                reference_split=reference_split,
                verbose=verbose,
            )
        self.halt, self.monitor_split, self.reference_split = halt, monitor_split, reference_split
        self.verbose = verbose
        #: ``{"step", "ppl", "train_seconds", "tokens"}`` of each check
        self.checks: list[dict[str, Any]] = []
        self._adaptive = False  # the schedule is in force for this fit
        self._stop_step: int | None = None

    @property
    def stop_step(self) -> int | None:
        """The step at which the stop fired or would have (``None``: not yet)."""
        return self._stop_step

    @property
    def adaptive(self) -> bool:
        """Whether the adaptive schedule chooses the checks of this fit."""
        return self._adaptive

    def start(
        self,
        before: Measurement,
        datamodule: UnlearningData,
        metrics: Sequence[UnlearningMetric],
        *,
        target_ppl: float | None,
    ) -> float:
        """Fix the target (``target_ppl``, else the reference split's perplexity ``before``) and
        give it to the stop (unless it has one) and the schedule; returns it. A reference split
        that no metric measured is refused naming the metric."""
        if target_ppl is None:
            key = f"{self.reference_split}/ppl"
            has_split = self.reference_split in getattr(datamodule, "eval_sources", {})
            if key not in before.values and has_split:
                raise ValueError(
                    f"the approximate-retrain target is the original model's '{key}', which no "
                    f"configured metric computes ({[type(m).__name__ for m in metrics]}): add "
                    "lightning_unlearn.evaluation.Perplexity to the metrics, or give target_ppl"
                )
            target_ppl = approximate_target(before.values, split=self.reference_split)
        if self.stop is not None and self.stop.target_ppl is None:
            self.stop.target_ppl = target_ppl
        if self.schedule is not None and self.documents is None and self.stop is not None:
            self.schedule.start(
                threshold_ppl=target_ppl * (1.0 - self.stop.tolerance),
                before_ppl=finite(before.values.get(f"{self.monitor_split}/ppl")),
            )
        if self.verbose:
            split = self.reference_split
            log.info("approximate-retrain target: %s perplexity %.4f", split, target_ppl)
        return target_ppl

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self.stop is not None:
            self.stop.on_train_start(trainer, pl_module)
        # the adaptive schedule chooses among per-step checks: only a Trainer that may check
        # after every optimizer step leaves it the choice
        self._adaptive = self.schedule is not None and self.schedule.applies_to(trainer)

    def after_step(self, trainer: Any, step: int) -> None:
        """Whether the Trainer's validation follows this step (the adaptive schedule only)."""
        if self._adaptive:
            self.schedule.steer(trainer, step, stop_known=self._stop_step is not None)

    def record(
        self,
        trainer: Any,
        evaluator: Any,
        *,
        train_seconds: float,
        tokens: int,
    ) -> bool:
        """A check after the current step (the module's evaluator's last values and, for
        per-document targets, the monitored split's documents): recorded, and given to the
        schedule and the stop. ``True`` when the stop fires for the first time."""
        values = evaluator.last.values
        step = int(trainer.global_step)
        ppl = finite(values.get(f"{self.monitor_split}/ppl"))
        check = {"step": step, "ppl": ppl, "train_seconds": train_seconds, "tokens": tokens}
        self.checks.append(check)
        if self._adaptive:
            self.schedule.record_check(step, ppl)
        halt_before = trainer.should_stop
        if self.documents is not None:
            documents = dict(evaluator.last.documents.get(self.monitor_split, {}))
            documents["doc_index"] = evaluator.last_documents[self.monitor_split].doc_index
            reached, check["within"] = self.documents.check(trainer, documents)
        elif self.stop is None:
            return False
        else:
            reached = self.stop.check(trainer, {f"val/{k}": v for k, v in values.items()})
        if not self.halt:
            trainer.should_stop = halt_before  # record where it would stop, and train on
        if reached and self._stop_step is None:
            self._stop_step = step
            return True
        return False

    def annotate(self, report: dict[str, Any]) -> dict[str, Any]:
        """The report with the per-document targets (``document_targets``, and a ``targets``
        column of the forget documents), when there are any."""
        if self.documents is not None and self.documents.targets is not None:
            report["document_targets"] = self.documents.targets.to_json()
            report.setdefault("documents", {})["targets"] = self.documents.report_columns()
        return report

    def summary(self) -> dict[str, Any]:
        """The report's ``stopped_step``, ``reached_target`` and ``checks`` entries."""
        stopped = self._stop_step
        if self.halt:
            stopped = self.stop.stopped_step if self.stop is not None else None
        steps = [c["step"] for c in self.checks]
        schedule = "adaptive" if self._adaptive else "fixed"
        return {
            "stopped_step": stopped,
            "reached_target": stopped is not None,
            "checks": {"schedule": schedule, "count": len(self.checks), "steps": steps},
        }

    def state_dict(self, extra: Mapping[str, Any]) -> dict[str, Any]:
        """The checks, ``extra`` and the stop's state, for a checkpoint."""
        stop = None if self.stop is None else self.stop.state_dict()
        return {"checks": list(self.checks), **extra, "stop": stop}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.checks = list(state_dict.get("checks", []))
        if self.stop is not None and state_dict.get("stop") is not None:
            self.stop.load_state_dict(state_dict["stop"])
