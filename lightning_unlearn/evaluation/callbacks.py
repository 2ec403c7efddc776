"""Stop unlearning when the forget set looks like unseen text: the approximate-retrain guideline.

Yao et al. (ACL 2024, arXiv:2402.15159) tune learning rate and steps so that the forget-set
perplexity reaches the *approximate-retrain* perplexity — the original model's perplexity on
in-distribution text it never saw — and stop there: going further only destroys utility.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn

from .metrics import EVAL_SPLITS
from .results import EmptyApproximateSplitError, approximate_target, normalise_metrics

log = logging.getLogger(__name__)

__all__ = ["ApproximateRetrainStopping"]


class ApproximateRetrainStopping(Callback):
    """Stop training once forget perplexity reaches the approximate-retrain target.

    The target is the *original* model's perplexity on the approximate split. Give it as
    ``target_ppl``, or leave it ``None`` and let the callback read ``val/approximate/ppl`` from the
    first validation at global step 0: run ``trainer.validate(module, datamodule)`` with this
    callback attached before ``trainer.fit``, or fit with ``num_sanity_val_steps=-1`` (a full
    validation before the first step). Fit refuses to start without a target.

    After every validation during fit the callback stops training when
    ``forget ppl >= target * (1 - tolerance)``, records ``stopped_step`` (the global step of that
    validation), logs it as ``approximate_retrain/stopped_step`` to the trainer's loggers and to
    the Python log. Every validation (step 0 included) is appended to ``history``
    (``{"step", "forget", "approximate", "retain", "general"}`` perplexities, ``None`` when a split
    is absent) for the report's plot.

    The stop can only happen where a validation happens: ``val_check_interval`` (an int counts
    training batches; with ``check_val_every_n_epoch=None`` it counts across epochs) and
    ``check_val_every_n_epoch`` set the granularity, so training may overshoot the target by up
    to one validation interval. With ``accumulate_grad_batches > 1`` batches and optimizer steps
    differ: choose ``val_check_interval`` as a multiple of it. ``min_steps`` / ``min_epochs`` of the
    Trainer take precedence over the stop.

    Args:
        target_ppl: the target forget perplexity; ``None`` reads it from the step-0 validation.
        tolerance: stop when the forget perplexity is within this fraction below the target
            (``0.05`` stops at 95% of it). The paper stops on reaching the target: 0.
        monitor_split: the split whose perplexity rises during unlearning.
        reference_split: the split whose step-0 perplexity is the target.
        prefix: the prefix under which the module logs evaluation metrics.
        verbose: log the target and the stop at INFO level.
    """

    def __init__(
        self,
        *,
        target_ppl: float | None = None,
        tolerance: float = 0.0,
        monitor_split: str = "forget",
        reference_split: str = "approximate",
        prefix: str = "val/",
        verbose: bool = True,
    ) -> None:
        super().__init__()
        if target_ppl is not None and (not math.isfinite(target_ppl) or target_ppl <= 0):
            raise ValueError(f"target_ppl must be a positive finite perplexity, got {target_ppl}")
        if not 0.0 <= tolerance < 1.0:
            raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")
        self.target_ppl = None if target_ppl is None else float(target_ppl)
        self.tolerance = float(tolerance)
        self.monitor_split = monitor_split
        self.reference_split = reference_split
        self.prefix = prefix
        self.verbose = verbose
        self.stopped_step: int | None = None
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.target_ppl is None:
            raise EmptyApproximateSplitError(
                "ApproximateRetrainStopping has no target: pass target_ppl, or run "
                "trainer.validate(...) with this callback before trainer.fit(...) (or fit with "
                f"num_sanity_val_steps=-1) so it can read '{self.prefix}{self.reference_split}/ppl' "
                "at step 0"
            )

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if getattr(trainer, "sanity_checking", False) and not math.isinf(
            float(getattr(trainer, "num_sanity_val_steps", 0))
        ):
            return  # a partial sanity check says nothing about the split perplexities
        self.check(trainer, trainer.callback_metrics)

    # ------------------------------------------------------------------ logic
    def check(self, trainer: Any, metrics: dict[str, Any]) -> bool:
        """Record one validation's metrics and decide whether to stop; returns the decision."""
        step = int(trainer.global_step)
        flat = normalise_metrics(
            {k[len(self.prefix) :]: v for k, v in metrics.items() if k.startswith(self.prefix)}
        )
        if self.target_ppl is None:
            if step != 0:
                raise EmptyApproximateSplitError(
                    f"ApproximateRetrainStopping first saw a validation at step {step}, not 0: the "
                    "target must be the original model's perplexity; pass target_ppl"
                )
            self.target_ppl = approximate_target(flat, split=self.reference_split)
            self._info(
                "approximate-retrain target: %s perplexity %.4f",
                self.reference_split,
                self.target_ppl,
            )
            self._log_metrics(trainer, {"approximate_retrain/target_ppl": self.target_ppl}, step)
        entry: dict[str, Any] = {"step": step}
        for split in dict.fromkeys((*EVAL_SPLITS, self.monitor_split, self.reference_split)):
            entry[split] = flat.get(f"{split}/ppl")
        if self.history and self.history[-1]["step"] == step:
            self.history[-1] = entry  # e.g. validate() then a full sanity check at step 0
        else:
            self.history.append(entry)
        if getattr(trainer.state, "fn", None) != TrainerFn.FITTING or getattr(
            trainer, "sanity_checking", False
        ):
            return False
        current = entry[self.monitor_split]
        if current is None:
            raise KeyError(
                f"ApproximateRetrainStopping needs '{self.prefix}{self.monitor_split}/ppl' but the "
                f"validation logged {sorted(metrics)}; give the data module a {self.monitor_split} "
                "evaluation split"
            )
        threshold = self.target_ppl * (1.0 - self.tolerance)
        # NaN or inf perplexity means the model diverged past the target: stop as well
        should_stop = not (current < threshold)
        reduce = getattr(getattr(trainer, "strategy", None), "reduce_boolean_decision", None)
        if reduce is not None:
            should_stop = bool(reduce(should_stop, all=False))
        if should_stop and self.stopped_step is None:
            trainer.should_stop = True
            self.stopped_step = step
            self._info(
                "approximate-retrain stop at step %d: %s perplexity %.4f >= %.4f (target %.4f, "
                "tolerance %g)",
                step,
                self.monitor_split,
                current,
                threshold,
                self.target_ppl,
                self.tolerance,
            )
            self._log_metrics(trainer, {"approximate_retrain/stopped_step": float(step)}, step)
        elif should_stop:
            trainer.should_stop = True
        return should_stop

    def _info(self, msg: str, *args: Any) -> None:
        if self.verbose:
            log.info(msg, *args)

    @staticmethod
    def _log_metrics(trainer: Any, values: dict[str, float], step: int) -> None:
        for logger in getattr(trainer, "loggers", None) or []:
            logger.log_metrics(values, step=step)

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        return {
            "target_ppl": self.target_ppl,
            "stopped_step": self.stopped_step,
            "history": list(self.history),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.target_ppl = state_dict.get("target_ppl", self.target_ppl)
        self.stopped_step = state_dict.get("stopped_step")
        self.history = list(state_dict.get("history", []))
