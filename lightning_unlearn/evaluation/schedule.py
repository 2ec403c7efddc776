"""When to check: a full forget-split check only when the target may have been reached.

The stop (:class:`~lightning_unlearn.evaluation.ApproximateRetrainStopping`) reads full checks of
the monitored split: a forward pass over every forget window, about the cost of a training step.
Checking after every step doubles the cost of a run; checking every ``n`` steps overshoots the
target by up to ``n - 1`` steps. Every training step already computes the loss of its forget
batch before its update, so the workflow has, for free, a noisy estimate of where the forget
split stands. :class:`AdaptiveChecks` runs a full check only when the upper end of a 95%
interval of that estimate reaches the stop's threshold, plus every ``every`` steps as a safety
net. The rule only decides *when* to look; the stop still decides on a full check.

The estimate after step ``t``. The forget batch of step ``t`` was scored by the model before
the update (``theta_{t-1}``); per window ``i`` its mean NLL ``x_i`` over ``n_i`` target tokens.

* When the batch's windows are windows the before-measurement scored (the same token ids: the
  forget set unpacked, as the demo and most runs train), each contributes its *change*
  ``d_i = x_i - b_i`` from its own value ``b_i`` under the original model. Windows differ far more
  from each other than in how much unlearning has moved them, so the change is the precise
  quantity: the split's log-perplexity is estimated as ``B + mean_n(d)`` (``B`` the split's
  before value, ``mean_n`` the token-weighted mean), with the standard error of that mean.
* Otherwise (packed windows, a window seen for the first time) the level itself:
  ``mean_n(x)``, with its standard error.

A step's update moves the model past what its batch saw, so the prediction for the model the
check would score adds the last rise, ``e_t + max(0, e_t - e_{t-1})``, whose variance is
``se_t^2 + (se_t^2 + se_{t-1}^2)`` when that rise is counted. A check is due when
``prediction + z * sd >= log(threshold)`` (``z`` = 1.96). One window gives no spread: then a
check is due (nothing is skipped on too little evidence).
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
    docstring for the estimate).

    Args:
        every: a check at least every this many steps, whatever the estimate (a safety net).
        z: the interval's normal quantile (1.96: 95%, two-sided).
    """

    def __init__(self, *, every: int = 10, z: float = 1.96) -> None:
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"adaptive checks: every must be a positive integer, got {every!r}")
        if not z > 0:
            raise ValueError(f"adaptive checks: z must be > 0, got {z!r}")
        self.every, self.z = every, float(z)
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
        self.estimates, self.decisions = [], []

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
        """The upper end of the interval of the prediction for the model after the last step."""
        if not self.estimates:
            return math.inf
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
        bound = self.upper_bound()
        due = step % self.every == 0 or not bound < self.threshold
        self.decisions.append({"step": step, "upper_bound": bound, "threshold": self.threshold,
                               "due": due})  # fmt: skip
        return due
