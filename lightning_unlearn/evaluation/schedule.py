"""When to check: a full forget-split check only when the target may have been reached.

The stop (:class:`~lightning_unlearn.evaluation.ApproximateRetrainStopping`) reads full checks of
the monitored split: a forward pass over every forget window, about the cost of a training step.
Checking after every step doubles the cost of a run; checking every ``n`` steps overshoots the
target by up to ``n - 1`` steps. :class:`AdaptiveChecks` runs a full check only when the split
may have crossed the stop's threshold, plus every ``every`` steps as a safety net. The rule only
decides *when* to look; the stop still decides on a full check.

The prediction. The first check follows step 1 and measures how fast the split rises. From the
last check ``(c, T_c)`` (log-perplexity) the split is predicted to rise at most ``growth`` times
the faster of its mean rate so far, ``(T_c - B) / c``, and its rate since the check before,
``(T_c - T_p) / (c - p)``: ``T_c + growth * rate * (t - c)`` after step ``t`` (``B`` the value
before unlearning). A check is due when the prediction reaches ``log(threshold)``, or at every
``every``-th step, which also re-measures the rate so no prediction reaches further than
``every`` steps. Gradient ascent accelerates (on the demo the per-step rise went from 0.071 to
0.102 nats over five steps, at a third of its rate from 0.019 to 0.040 over fifteen): ``growth``
= 1.5 with ``every`` = 10 checked the demo after steps 1 and 5 and the slower run after steps 1,
10 and 15, both stopping where a check after every step stops.

Why not the training batches' own losses. Every step computes its forget batch's loss before the
update, a free estimate, and it was tried first. It does not estimate the split: with the forget
set taken in order, a batch of the first epoch holds windows not yet trained on, which move only
through the other windows' updates (on the demo 0.04 nats after five steps, against the split's
0.45), and a batch of the second epoch holds the windows pushed longest ago. An interval of that
estimate missed the demo's crossing by two steps and asked for a check at the first step of the
second epoch of the slower run, eight steps early.
"""

from __future__ import annotations

import math

__all__ = ["AdaptiveChecks"]

#: a ``val_check_batch`` no step count reaches: no validation after this step
NO_CHECK = 2**62


class AdaptiveChecks:
    """Decides after each training step whether the workflow runs a full check (see the module
    docstring for the prediction).

    Args:
        every: a check at least every this many steps, whatever the prediction (a safety net).
        growth: how much faster than measured the split may rise between checks.
    """

    def __init__(self, *, every: int = 10, growth: float = 1.5) -> None:
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"adaptive checks: every must be a positive integer, got {every!r}")
        if not growth >= 1:
            raise ValueError(f"adaptive checks: growth must be >= 1, got {growth!r}")
        self.every, self.growth = every, float(growth)
        self.threshold: float | None = None  # log-perplexity at which the stop fires
        self.before: float | None = None  # the monitored split's log-perplexity before
        self.checks: list[tuple[int, float]] = []  # (step, log-perplexity) of each full check
        self.decisions: list[dict] = []

    def start(self, *, threshold_ppl: float, before_ppl: float | None = None) -> None:
        """The stop's threshold and the monitored split's value before unlearning (perplexity)."""
        if not (math.isfinite(threshold_ppl) and threshold_ppl > 0):
            raise ValueError(
                f"adaptive checks: threshold must be a positive perplexity, got {threshold_ppl!r}"
            )
        self.threshold = math.log(threshold_ppl)
        self.before = None if before_ppl is None else math.log(before_ppl)
        self.checks, self.decisions = [], []

    def record_check(self, step: int, ppl: float | None) -> None:
        """A full check's value of the monitored split after step ``step`` (perplexity)."""
        if ppl is not None and math.isfinite(ppl) and ppl > 0:
            self.checks.append((int(step), math.log(ppl)))

    def predicted(self, step: int) -> float:
        """The prediction for the model after ``step`` (``inf`` before the first check: the
        rate is not known yet)."""
        if not self.checks:
            return math.inf
        c, value = self.checks[-1]
        rates = [(value - self.before) / c] if self.before is not None and c > 0 else []
        if len(self.checks) > 1:
            p, previous = self.checks[-2]
            rates.append((value - previous) / max(1, c - p))
        rate = max(rates, default=0.0)
        return value + self.growth * max(rate, 0.0) * max(0, step - c)

    def due(self, step: int) -> bool:
        """Whether a full check follows step ``step`` (it also records the decision)."""
        if self.threshold is None:
            raise RuntimeError("AdaptiveChecks.due before start(): no threshold")
        predicted = self.predicted(step)
        due = step % self.every == 0 or not predicted < self.threshold
        self.decisions.append({"step": step, "predicted": predicted, "due": due})
        return due

    def applies_to(self, trainer) -> bool:
        """Whether the schedule chooses the checks of this fit: once started, with a Trainer that
        may check after every optimizer step (``val_check_interval=1``,
        ``check_val_every_n_epoch=None``, no gradient accumulation)."""
        return (
            self.threshold is not None
            and getattr(trainer, "val_check_batch", None) == 1
            and getattr(trainer, "check_val_every_n_epoch", 0) is None
            and getattr(trainer, "accumulate_grad_batches", 1) == 1
        )

    def steer(self, trainer, step: int, *, stop_known: bool) -> None:
        """Let the Trainer's validation (the check) follow step ``step`` only when it is due
        (once the stop is known, the safety net only); the decision is reduced over processes:
        any one that asks for a check gets it, so all of them run it."""
        due = step % self.every == 0 if stop_known else self.due(step)
        reduce = getattr(trainer.strategy, "reduce_boolean_decision", None)
        if reduce is not None:
            due = bool(reduce(due, all=False))
        trainer.val_check_batch = 1 if due else NO_CHECK
