"""When to check: a full forget-split check only when the target may have been reached.

The stop (:class:`~lightning_unlearn.evaluation.ApproximateRetrainStopping`) reads full checks of
the monitored split: a forward pass over every forget window, about the cost of a training step.
Checking after every step doubles the cost of a run; checking every ``n`` steps overshoots the
target by up to ``n - 1`` steps. :class:`AdaptiveChecks` runs a full check only when the split
may have crossed the stop's threshold, plus every ``every`` steps as a safety net. The rule only
decides *when* to look; the stop still decides on a full check.

Two predictions of the split's log-perplexity after step ``t``; a check is due when either
reaches ``log(threshold)``:

* **From the checks** (the main one). The first check follows step 1 and measures how fast the
  split rises. From the last check ``(c, T_c)`` the split is predicted to rise at most
  ``growth`` times the faster of its mean rate so far, ``(T_c - B) / c``, and its rate since the
  check before, ``(T_c - T_p) / (c - p)``: ``T_c + growth * rate * (t - c)`` (``B`` the value
  before unlearning). Gradient ascent accelerates (on the demo the per-step rise went from 0.071
  to 0.102 nats over the first five steps): ``growth`` = 1.5 covers that, and every check that
  does not stop re-measures the rate, so the checks close in on the crossing.
* **From the training batches** (free). Every training step computes its forget batch's loss
  before its update. When the batch's windows are windows the before-measurement scored (the same
  token ids: the forget set unpacked, as the demo and most runs train), each contributes its
  *change* ``d_i = x_i - b_i`` from its own value under the original model (windows differ far
  more from each other than in how much unlearning has moved them); otherwise the level itself.
  The estimate ``B + mean_n(d)`` (token-weighted), plus the last rise, plus 1.96 standard errors
  is an upper bound for the windows the batch holds. It is *not* an estimate of the split while
  the first epoch runs: a batch holds windows not yet trained on, which have moved only through
  the others' updates (on the demo, 0.04 nats after five steps against the split's 0.45). So it
  only adds checks, when even those windows say the threshold is near.

One window gives no spread: the batch bound is then infinite (nothing skipped on too little
evidence). A method whose forget term does not run the model on the forget batch through
``self(batch)`` leaves no batch estimate: the checks' prediction decides alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["AdaptiveChecks", "Estimate", "window_key"]


def window_key(token_ids: Sequence[int]) -> int:
    """The identity of a window: its token ids (a training row without its padding, or an
    evaluation row)."""
    return hash(tuple(int(t) for t in token_ids))


@dataclass(frozen=True)
class Estimate:
    """The forget split's log-perplexity as one step's batch saw it."""

    step: int
    value: float
    se: float
    paired: bool  # from changes against the before-measurement (True) or from levels


def _weighted_mean_se(values: Sequence[float], weights: Sequence[float]) -> tuple[float, float]:
    """Token-weighted mean and its standard error (the weighted spread over the effective
    number of windows, ``(sum w)^2 / sum w^2``); ``inf`` for fewer than two windows."""
    total = sum(weights)
    mean = sum(v * w for v, w in zip(values, weights)) / total
    if len(values) < 2:
        return mean, math.inf
    var = sum(w * (v - mean) ** 2 for v, w in zip(values, weights)) / total
    effective = total**2 / sum(w * w for w in weights)
    var *= effective / max(effective - 1.0, 1e-12)  # unbiased
    return mean, math.sqrt(var / effective)


class AdaptiveChecks:
    """Decides after each training step whether the workflow runs a full check (see the module
    docstring for the two predictions).

    Args:
        every: a check at least every this many steps, whatever the predictions (a safety net).
        z: the batch bound's normal quantile (1.96: 95%, two-sided).
        growth: how much faster than measured the split may rise between checks.
    """

    def __init__(self, *, every: int = 10, z: float = 1.96, growth: float = 1.5) -> None:
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"adaptive checks: every must be a positive integer, got {every!r}")
        if not z > 0:
            raise ValueError(f"adaptive checks: z must be > 0, got {z!r}")
        if not growth >= 1:
            raise ValueError(f"adaptive checks: growth must be >= 1, got {growth!r}")
        self.every, self.z, self.growth = every, float(z), float(growth)
        self.checks: list[tuple[int, float]] = []  # (step, log-perplexity) of each full check
        self.threshold: float | None = None  # log-perplexity at which the stop fires
        self.before: float | None = None  # the monitored split's log-perplexity before
        self.baseline: dict[int, float] = {}  # window key -> its mean NLL before
        self.estimates: list[Estimate] = []
        self.decisions: list[dict] = []

    def start(
        self,
        *,
        threshold_ppl: float,
        before_ppl: float | None = None,
        baseline: Mapping[int, float] | None = None,
    ) -> None:
        """The stop's threshold (perplexity), and what the before-measurement gives: the split's
        perplexity and each window's mean NLL by :func:`window_key`."""
        if not (math.isfinite(threshold_ppl) and threshold_ppl > 0):
            raise ValueError(f"adaptive checks: threshold must be a positive perplexity, got "
                             f"{threshold_ppl!r}")  # fmt: skip
        self.threshold = math.log(threshold_ppl)
        self.before = None if before_ppl is None else math.log(before_ppl)
        self.baseline = dict(baseline or {})
        self.estimates, self.decisions, self.checks = [], [], []

    def record_check(self, step: int, ppl: float | None) -> None:
        """A full check's value of the monitored split after step ``step`` (perplexity)."""
        if ppl is not None and math.isfinite(ppl) and ppl > 0:
            self.checks.append((int(step), math.log(ppl)))

    def predicted(self, step: int) -> float:
        """The prediction from the checks for the model after ``step`` (``inf`` before the
        first check: the rate is not known yet)."""
        if not self.checks:
            return math.inf
        c, value = self.checks[-1]
        rates = [(value - self.before) / c] if self.before is not None and c > 0 else []
        if len(self.checks) > 1:
            p, previous = self.checks[-2]
            rates.append((value - previous) / max(1, c - p))
        rate = max(rates, default=0.0)
        return value + self.growth * max(rate, 0.0) * max(0, step - c)

    def observe(
        self, step: int, keys: Sequence[int], nll: Sequence[float], tokens: Sequence[int]
    ) -> Estimate | None:
        """Record step ``step``'s forget batch: per window its key, summed NLL and target count."""
        rows = [(k, float(s), int(n)) for k, s, n in zip(keys, nll, tokens) if int(n) > 0]
        if not rows:
            return None
        paired = self.before is not None and all(k in self.baseline for k, _, _ in rows)
        weights = [n for _, _, n in rows]
        if paired:
            changes = [s / n - self.baseline[k] for k, s, n in rows]
            mean, se = _weighted_mean_se(changes, weights)
            estimate = Estimate(step, self.before + mean, se, True)
        else:
            mean, se = _weighted_mean_se([s / n for _, s, n in rows], weights)
            estimate = Estimate(step, mean, se, False)
        self.estimates.append(estimate)
        return estimate

    def upper_bound(self) -> float:
        """The upper end of the interval of the batches' prediction for the model after the last
        step (``-inf`` without a batch estimate: the checks' prediction decides alone)."""
        if not self.estimates:
            return -math.inf
        last = self.estimates[-1]
        value, var = last.value, last.se**2
        if len(self.estimates) > 1:
            previous = self.estimates[-2]
            rise = last.value - previous.value
            if rise > 0 and previous.paired == last.paired:
                value += rise
                var += last.se**2 + previous.se**2
        return value + self.z * math.sqrt(var)

    def due(self, step: int) -> bool:
        """Whether a full check follows step ``step`` (it also records the decision)."""
        if self.threshold is None:
            raise RuntimeError("AdaptiveChecks.due before start(): no threshold")
        predicted, bound = self.predicted(step), self.upper_bound()
        due = (
            step % self.every == 0
            or not predicted < self.threshold
            or not bound < self.threshold
        )
        self.decisions.append({"step": step, "predicted": predicted, "upper_bound": bound,
                               "threshold": self.threshold, "due": due})  # fmt: skip
        return due
