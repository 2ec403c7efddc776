"""Forgetting quality of the NeurIPS 2023 Machine Unlearning competition (Kaggle), as pure math.

Triantafillou et al. 2024, "Are we making progress in unlearning? Findings from the first NeurIPS
unlearning competition" (arXiv:2406.09073); reference code: ``google-deepmind/unlearning_evaluation``
``metric.py`` (``_get_epsilons``, ``compute_forget_score_from_confs``) and ``main.py``.

N unlearned models (from N runs of the unlearning algorithm) and N models retrained from scratch
without the forget set each give one confidence per forget example, arrays ``[N, E]``. For each
example, the two columns of N scores are two samples; a family of threshold attacks tries to tell
them apart, and each attack's false-positive / false-negative rates bound the example's
``(epsilon, delta)`` "privacy degree" (Kairouz et al. 2015 hypothesis-testing view of DP):

    epsilon = max(log(1 - delta - FPR) - log FNR,  log(1 - delta - FNR) - log FPR).

Each example earns points that halve for every 0.5 of epsilon; the forgetting quality ``F`` is the
mean over examples, and the competition score multiplies it by the retain and test utility ratios.

Two ways to search the thresholds (``thresholds=``):

* ``"grid"`` (the default) is the reference's search, number for number: single thresholds at
  ``ceil(100 x range)`` points ``torch.linspace``-spaced (float32, as ``metric.py``) over the pooled
  scores; for the two-threshold rule, right ends ``hi`` on a 0.01 grid over
  ``[min + s - window, max + window]`` of the peakier population (``s`` its spread) and, for each,
  400 left ends (``ceil(2 x window x 100)``) over ``[hi - s - window, hi - s + window]``; error
  rates and epsilon in float32 as the reference's torch / numpy code. ``window`` (the reference's
  ``buffer``) is 2.0, in the units of the confidences (the competition's logit-scaled ones).
  Tested against ``metric.py``'s own output
  (``tests/fixtures/references/competition_forgetting_quality.json``).
* ``"exact"`` takes every pooled score as a threshold: every partition a grid could produce is
  produced exactly, on any score scale, so epsilon is never under-estimated by grid resolution.
  With ``window=None`` it tries *every* interval for the two-threshold rule (this library's default
  before 0.2.0): more (tail) rules, so a larger epsilon. For two *identical* N(0, 1) populations
  of N = 512 (16 examples, seed 1) epsilon is 2.1-2.7 against 0.7-2.3 with the reference's search,
  F 0.047 against 0.188 (the issue's own draw: 0.057 against 0.208). At N = 8 they often agree
  (two identical N(0, 1) populations in the fixture: F 0.208 both), but not always (a shifted,
  wider population: 0.125 every interval, 0.146 the reference's grid, whose coarser thresholds
  miss some partitions). ``window=2.0`` limits the exact search to the intervals the reference
  reaches (without its grid).

One difference remains in both: an example for which every rule is dropped gets epsilon 0 (the
reference stops with an assertion instead).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "EPSILON_CAP",
    "DELTA",
    "REFERENCE_WINDOW",
    "epsilon_per_example",
    "points",
    "forgetting_quality",
    "competition_score",
]

DELTA = 1e-5
"""``delta`` of the reference ``metric.py`` (the 2023 starting kit used 0.01)."""

EPSILON_CAP = 50.0
"""Largest reported epsilon (reference ``EPSILON_CAP``); far beyond any scoring bucket."""

REFERENCE_WINDOW = 2.0
"""The reference's ``buffer``: how far the two-threshold search reaches around the peakier
population's spread, in confidence units."""

_GRID_PER_UNIT = 100  # reference NUM_THRESHOLDS_PER_UNIT
_PEAKY_RATIO = 0.01
_BUCKET = 0.5
_SEARCHES = ("grid", "exact")


def _check_confidences(unlearned: np.ndarray, retrained: np.ndarray) -> tuple[np.ndarray, ...]:
    unlearned = np.asarray(unlearned, dtype=np.float64)
    retrained = np.asarray(retrained, dtype=np.float64)
    if unlearned.ndim != 2 or unlearned.shape != retrained.shape:
        raise ValueError(
            "unlearned and retrained confidences must both be [N models, E examples] with the same "
            f"shape, got {unlearned.shape} and {retrained.shape}"
        )
    if unlearned.size == 0:
        raise ValueError(f"need at least one model and one example, got shape {unlearned.shape}")
    for name, values in (("unlearned", unlearned), ("retrained", retrained)):
        if not np.isfinite(values).all():
            raise ValueError(f"{name} confidences contain NaN or infinite values")
    return unlearned, retrained


def _rule_epsilons(
    false_pos: np.ndarray, false_neg: np.ndarray, n: int, delta: float
) -> np.ndarray:
    """Epsilon of each rule from its error *counts* out of ``n``; NaN marks a dropped rule.

    Both counts 0 (perfect separation): ``inf``. Exactly one 0: dropped (the reference's reading is
    too few samples to trust). A term whose ``1 - delta - rate`` is ``<= 0`` is vacuous (``-inf``,
    as the reference's ``nanmax`` ignores it). The result is clipped at 0 from below.
    """
    fpr, fnr = false_pos / n, false_neg / n
    with np.errstate(divide="ignore", invalid="ignore"):
        room_fp, room_fn = 1.0 - delta - fpr, 1.0 - delta - fnr
        first = np.where(room_fp > 0, np.log(room_fp), -np.inf) - np.log(fnr)
        second = np.where(room_fn > 0, np.log(room_fn), -np.inf) - np.log(fpr)
    eps = np.maximum(np.maximum(first, second), 0.0)
    eps = np.where((false_pos == 0) & (false_neg == 0), np.inf, eps)
    return np.where((false_pos == 0) != (false_neg == 0), np.nan, eps)


def _counts_at_or_above(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    return sorted_values.size - np.searchsorted(sorted_values, thresholds, side="left")


def _counts_inside(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``[lo, hi]`` counts for every pair of thresholds: rows ``lo``, columns ``hi``."""
    at_most = np.searchsorted(sorted_values, thresholds, side="right")
    below = np.searchsorted(sorted_values, thresholds, side="left")
    return at_most[None, :] - below[:, None]


def _reference_window(
    thresholds: np.ndarray, peaky: np.ndarray, width: float, window: float
) -> np.ndarray:
    """Intervals ``[t_i, t_j]`` (rows ``i``, columns ``j``) the reference's search reaches.

    The reference tries ``hi`` in ``[min + width - window, max + window]`` of the peakier
    population and ``hi - lo`` within ``window`` of ``width`` (its smaller spread). The pooled
    scores inside ``[lo, hi]`` are ``t_i..t_j`` when ``lo`` is in ``(t_{i-1}, t_i]`` and ``hi`` in
    ``[t_j, t_{j+1})``; the interval is reached when those ranges allow such a ``lo`` and ``hi``.
    """
    before = np.concatenate([[-np.inf], thresholds[:-1]])
    after = np.concatenate([thresholds[1:], [np.inf]])
    hi_low = np.maximum(thresholds, peaky[0] + width - window)
    hi_high = np.minimum(after, peaky[-1] + window)
    shortest = hi_low[None, :] - thresholds[:, None]
    longest = hi_high[None, :] - before[:, None]
    return (hi_low <= hi_high)[None, :] & (shortest <= width + window) & (longest >= width - window)


def _grid_rule_epsilons(false_pos: np.ndarray, false_neg: np.ndarray, n: int, delta: float):
    """:func:`_rule_epsilons` in the reference's float32 arithmetic (its rates are float32 means)."""
    fpr = false_pos.astype(np.float32) / np.float32(n)
    fnr = false_neg.astype(np.float32) / np.float32(n)
    keep = np.float32(1.0 - delta)
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.log(keep - fpr) - np.log(fnr)  # NaN where 1 - delta - FPR <= 0: ignored
        second = np.log(keep - fnr) - np.log(fpr)
        terms = np.fmax(first, second)  # NaN only when both are
    eps = np.clip(terms, np.float32(0), None).astype(np.float64)
    eps = np.where((false_pos == 0) & (false_neg == 0), np.inf, eps)
    return np.where((false_pos == 0) != (false_neg == 0), np.nan, eps)


@functools.lru_cache(maxsize=8)
def _grid_epsilon_table(n: int, delta: float) -> np.ndarray:
    """Epsilon of a rule with ``fp`` false positives and ``fn`` false negatives out of ``n``,
    at ``[fp * (n + 1) + fn]``: every rule's epsilon is one of these ``(n + 1)**2`` numbers."""
    counts = np.arange(n + 1)
    false_pos, false_neg = np.repeat(counts, n + 1), np.tile(counts, n + 1)
    table = _grid_rule_epsilons(false_pos, false_neg, n, delta)
    table.setflags(write=False)
    return table


def _grid_example_epsilon(
    pos: np.ndarray,
    neg: np.ndarray,
    pos_spread: float,
    neg_spread: float,
    delta: float,
    window: float,
) -> float | None:
    """Largest epsilon of the rules of the reference's grid search; ``None``: every rule dropped."""
    import torch

    n = pos.size
    pooled_min, pooled_max = min(pos[0], neg[0]), max(pos[-1], neg[-1])
    steps = int(math.ceil((pooled_max - pooled_min) * _GRID_PER_UNIT))
    single = torch.linspace(
        torch.tensor(pooled_min, dtype=torch.float64),
        torch.tensor(pooled_max, dtype=torch.float64),
        steps,
    )  # float32, the default dtype, as the reference's
    single = single.numpy().astype(np.float64)
    keys = [
        _counts_at_or_above(neg, single) * (n + 1) + n - _counts_at_or_above(pos, single),
    ]
    # two thresholds: [lo, hi] is called the peakier population (spread tie: the negative one)
    peaky, other = (neg, pos) if pos_spread >= neg_spread else (pos, neg)
    width = neg_spread if pos_spread > neg_spread else pos_spread
    lowest, highest = peaky[0] + width - window, peaky[-1] + window
    right = np.linspace(lowest, highest, num=int(np.ceil((highest - lowest) * _GRID_PER_UNIT)))
    per_right = int(np.ceil(2 * window * _GRID_PER_UNIT))
    left = np.linspace(right - width - window, right - width + window, num=per_right, axis=-1)
    # counts of each population in [lo, hi] = (<= hi) - (< lo), through one search of the pooled
    pooled = np.concatenate([peaky, other])
    order = np.argsort(pooled, kind="stable")
    is_peaky = (order < n).astype(np.int64)
    peaky_below = np.concatenate([[0], np.cumsum(is_peaky)])  # peaky among the first k pooled
    below = np.searchsorted(pooled[order], left, side="left")  # [right, left]: pooled < lo
    at_most = np.searchsorted(pooled[order], right, side="right")[:, None]  # pooled <= hi
    peaky_in = np.maximum(peaky_below[at_most] - peaky_below[below], 0)
    other_in = np.maximum((at_most - peaky_below[at_most]) - (below - peaky_below[below]), 0)
    keys.append((other_in * (n + 1) + n - peaky_in).reshape(-1))
    present = np.bincount(np.concatenate(keys), minlength=(n + 1) ** 2).astype(bool)
    eps = _grid_epsilon_table(n, float(delta))[present]
    kept = eps[~np.isnan(eps)]
    return float(kept.max()) if kept.size else None


def _example_epsilon(
    positive: np.ndarray,
    negative: np.ndarray,
    delta: float,
    cap: float,
    thresholds: str,
    window: float | None,
) -> float:
    pos_spread, neg_spread = np.ptp(positive), np.ptp(negative)
    if min(pos_spread, neg_spread) < _PEAKY_RATIO * max(pos_spread, neg_spread):
        return cap
    pos, neg = np.sort(positive), np.sort(negative)
    if thresholds == "grid":
        best = _grid_example_epsilon(pos, neg, pos_spread, neg_spread, delta, window)
        return 0.0 if best is None else float(np.clip(best, 0.0, cap))
    eps = _exact_example_epsilons(pos, neg, pos_spread, neg_spread, delta, window)
    kept = eps[~np.isnan(eps)]
    return float(np.clip(kept.max(), 0.0, cap)) if kept.size else 0.0


def _exact_example_epsilons(
    pos: np.ndarray,
    neg: np.ndarray,
    pos_spread: float,
    neg_spread: float,
    delta: float,
    window: float | None,
) -> np.ndarray:
    """Epsilon of every rule with a threshold at every pooled score (NaN: dropped)."""
    n = pos.size
    thresholds = np.unique(np.concatenate([pos, neg]))
    # (a) one threshold: scores >= t are called positive (the larger-median population)
    single = _rule_epsilons(
        _counts_at_or_above(neg, thresholds), n - _counts_at_or_above(pos, thresholds), n, delta
    )
    # (b) two thresholds: scores in [lo, hi] are called the peakier population (spread tie: the
    # negative one, as the reference); errors are counted with the peakier one as "positive"
    peaky, other = (pos, neg) if pos_spread < neg_spread else (neg, pos)
    upper = np.triu(np.ones((thresholds.size, thresholds.size), dtype=bool))
    if window is not None:
        upper &= _reference_window(thresholds, peaky, min(pos_spread, neg_spread), window)
    double = _rule_epsilons(
        _counts_inside(other, thresholds)[upper],
        n - _counts_inside(peaky, thresholds)[upper],
        n,
        delta,
    )
    return np.concatenate([single, double])


def epsilon_per_example(
    unlearned: np.ndarray,
    retrained: np.ndarray,
    *,
    delta: float = DELTA,
    cap: float = EPSILON_CAP,
    thresholds: str = "grid",
    window: float | None = REFERENCE_WINDOW,
) -> np.ndarray:
    """Empirical privacy degree ``epsilon`` of every forget example (Triantafillou et al. 2024).

    The defaults reproduce the competition's ``metric.py`` (``_get_epsilons``) exactly, its
    threshold grid included.

    For example ``e``, the *positive* population is whichever of ``unlearned[:, e]`` and
    ``retrained[:, e]`` has the larger median; on a tie the unlearned one (the reference's
    ``retrain_is_positive = median_retrain > median_unlearned``).

    If one population's spread (max - min) is below 1% of the other's, epsilon is ``cap``: a very
    peaky population means the attack cannot be trusted to be sensitive enough (reference rule; two
    zero spreads are *not* peaky, and are separated or not by the rules below).

    Otherwise two families of decision rules are tried:

    * one threshold ``t``: scores ``>= t`` are called positive;
    * two thresholds ``lo <= hi``: scores in ``[lo, hi]`` are called the *peakier* population (the
      one with the strictly smaller spread; on a tie the negative one, as the reference), within
      ``window`` of the peakier spread (see the module docstring), or every interval.

    Each rule's ``FPR`` (share of the N negatives called positive) and ``FNR`` (share of the N
    positives called negative) give
    ``max(log(1 - delta - FPR) - log FNR, log(1 - delta - FNR) - log FPR)``, clipped at 0 below.
    ``FPR = FNR = 0`` gives ``inf``; a rule with exactly one of them 0 is dropped. A term with
    ``1 - delta - rate <= 0`` (a rate of 1) bounds nothing and is ignored; a rule with both terms
    ignored is dropped on the grid (the reference's ``nanmax`` gives NaN) and gives 0 with
    ``"exact"`` (the same maximum whenever another rule is kept). The example's epsilon is the
    maximum over kept rules, clipped to ``[0, cap]``, and 0 when every rule is dropped (e.g. two
    identical constant populations; the reference asserts). On exact median or spread ties the
    result can depend on which population is which, as in the reference; with continuous
    confidences such ties do not occur.

    Args:
        unlearned: confidences ``[N models, E examples]`` under the unlearned models.
        retrained: confidences ``[N models, E examples]`` under the retrained models.
        delta: the ``delta`` of ``(epsilon, delta)``-indistinguishability (reference: 1e-5).
        cap: largest epsilon reported (reference: 50).
        thresholds: ``"grid"`` (reference: 100 thresholds per confidence unit, float32 rates) or
            ``"exact"`` (every pooled score; no grid resolution).
        window: the reference's ``buffer`` (2.0), in confidence units: the two-threshold search
            keeps intervals with ``|hi - lo - s| <= window`` and ``hi`` in
            ``[min + s - window, max + window]`` of the peakier population, ``s`` its spread.
            Scale-dependent. ``None`` (only with ``"exact"``) tries every interval.

    Returns:
        ``epsilon`` per example, shape ``[E]``, in ``[0, cap]``.
    """
    unlearned, retrained = _check_confidences(unlearned, retrained)
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must be in [0, 1), got {delta}")
    _check_search(thresholds, window)
    retrain_is_positive = np.median(retrained, axis=0) > np.median(unlearned, axis=0)
    positive = np.where(retrain_is_positive, retrained, unlearned)
    negative = np.where(retrain_is_positive, unlearned, retrained)
    return np.array(
        [
            _example_epsilon(positive[:, e], negative[:, e], delta, cap, thresholds, window)
            for e in range(positive.shape[1])
        ]
    )


def _check_search(thresholds: str, window: float | None) -> None:
    if thresholds not in _SEARCHES:
        raise ValueError(f"thresholds must be one of {_SEARCHES}, got {thresholds!r}")
    if thresholds == "grid" and (window is None or not window > 0):
        raise ValueError(
            f"the reference's grid search needs a window > 0 (its buffer, 2.0), got {window}; "
            "every interval is thresholds='exact', window=None"
        )


def points(epsilon: np.ndarray, n_models: int) -> np.ndarray:
    """Points per example: 1 for epsilon in ``[0, 0.5)``, halving for every further 0.5.

    Buckets of width 0.5 run from 0 up to ``bound = ceil(ln(n_models - 1))``, the largest epsilon N
    samples per population can resolve (reference ``max_epsilon``): epsilon in ``[k/2, (k+1)/2)``
    earns ``2**-k`` for ``(k+1)/2 <= bound``, and epsilon ``>= bound`` earns 0. For N = 512 the
    bound is 7 (14 buckets); N = 4 gives 2; N = 3 gives 1; N = 2 gives 0, so nothing scores.

    Args:
        epsilon: per-example epsilon, ``>= 0``.
        n_models: N, the number of models per population (at least 2).
    """
    if n_models < 2:
        raise ValueError(f"points need at least 2 models per population, got n_models={n_models}")
    epsilon = np.asarray(epsilon, dtype=np.float64)
    if (epsilon < 0).any() or np.isnan(epsilon).any():
        raise ValueError(f"epsilon must be >= 0 and not NaN, got {epsilon}")
    bound = math.ceil(math.log(n_models - 1))
    return np.where(epsilon < bound, 0.5 ** np.floor(epsilon / _BUCKET), 0.0)


def forgetting_quality(
    unlearned: np.ndarray,
    retrained: np.ndarray,
    *,
    delta: float = DELTA,
    thresholds: str = "grid",
    window: float | None = REFERENCE_WINDOW,
) -> float:
    """Forgetting quality ``F``: mean :func:`points` over forget examples (Triantafillou et al. 2024).

    The defaults reproduce ``metric.py``'s ``compute_forget_score_from_confs``.

    Args:
        unlearned: confidences ``[N models, E examples]`` under the unlearned models.
        retrained: confidences ``[N models, E examples]`` under the retrained models.
        delta: see :func:`epsilon_per_example`.
        thresholds: see :func:`epsilon_per_example` (``"exact"`` for every pooled score).
        window: see :func:`epsilon_per_example` (``None`` with ``"exact"``: every interval).

    Returns:
        ``F`` in ``[0, 1]``; 1 means no example is distinguishable beyond epsilon 0.5.
    """
    eps = epsilon_per_example(
        unlearned, retrained, delta=delta, thresholds=thresholds, window=window
    )
    return float(points(eps, np.asarray(unlearned).shape[0]).mean())


def _mean_utility(value: float | Sequence[float], name: str) -> float:
    values = np.asarray(value, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError(f"{name} is empty: give one utility per model (or their mean)")
    return float(values.mean())


def competition_score(
    forgetting: float,
    *,
    retain_utility_unlearned: float | Sequence[float],
    retain_utility_retrained: float | Sequence[float],
    test_utility_unlearned: float | Sequence[float],
    test_utility_retrained: float | Sequence[float],
) -> float:
    """Final competition score ``F * (RA_u / RA_r) * (TA_u / TA_r)`` (reference ``main.py``).

    Utilities (accuracies in the competition) may be one number or one per model; each side is
    averaged over its models before the ratio.

    Args:
        forgetting: the forgetting quality ``F`` of :func:`forgetting_quality`.
        retain_utility_unlearned: retain-set utility of the unlearned model(s).
        retain_utility_retrained: retain-set utility of the retrained model(s).
        test_utility_unlearned: test-set utility of the unlearned model(s).
        test_utility_retrained: test-set utility of the retrained model(s).
    """
    retain_r = _mean_utility(retain_utility_retrained, "retain_utility_retrained")
    test_r = _mean_utility(test_utility_retrained, "test_utility_retrained")
    if retain_r == 0 or test_r == 0:
        raise ValueError(
            f"retrained utilities must be non-zero to form ratios, got retain {retain_r}, test {test_r}"
        )
    retain_u = _mean_utility(retain_utility_unlearned, "retain_utility_unlearned")
    test_u = _mean_utility(test_utility_unlearned, "test_utility_unlearned")
    return float(forgetting * (retain_u / retain_r) * (test_u / test_r))
