"""NeurIPS 2023 unlearning-competition forgetting quality against numbers worked out by hand,
and the reference's threshold search against metric.py's own output.

Notation in the comments: u = unlearned column, r = retrained column (N = 3 models each),
d = delta = 1e-5. "pos" is the population with the larger median (the unlearned one on a tie).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_reference_numbers import load

from lightning_unlearn.evaluation.forgetting_quality import (
    EPSILON_CAP,
    REFERENCE_WINDOW,
    _reference_window,
    competition_score,
    epsilon_per_example,
    forgetting_quality,
    points,
)

D = 1e-5
LN2 = math.log(2 - 3 * D)  # log(1 - d - 1/3) - log(1/3) = log(3 * (2/3 - d)) = log(2 - 3d)
# the hand-worked cases take a threshold at every pooled score and try every interval (the default
# before 0.2.0); the default, metric.py's own grid, is tested against its output in
# tests/test_reference_numbers.py
EVERY = {"thresholds": "exact", "window": None}


def eps_of(u, r, **kwargs) -> float:
    kwargs = {**EVERY, **kwargs}
    return float(epsilon_per_example(np.array([u], float).T, np.array([r], float).T, **kwargs)[0])


def test_identical_populations_give_zero_and_one_point():
    # u = r = [1, 2, 3]: medians tie -> pos = u; spreads tie (2, 2) -> not peaky.
    # one threshold, ">= t is pos":
    #   t=1: FNR 0, FPR 1 -> dropped;  t=2: FPR 2/3, FNR 1/3 -> log(1/3 - d) - log(1/3) < 0 and
    #   log(2/3 - d) - log(2/3) < 0 -> 0;  t=3: FPR 1/3, FNR 2/3 -> 0 likewise.
    # two thresholds, inside = the peakier one (tie -> r): every interval gives FPR = FNR-mirror
    #   of the above ([1,3]: FNR 0, FPR 1 -> dropped; the rest have both rates in {1/3, 2/3}) -> 0.
    assert eps_of([1, 2, 3], [1, 2, 3]) == 0.0
    assert points(np.array([0.0]), 3).tolist() == [1.0]


def test_peaky_population_is_capped():
    # u = [5, 5, 5] has spread 0 < 1% of r's spread 2 -> epsilon = cap without trying any rule.
    assert eps_of([5, 5, 5], [1, 2, 3]) == EPSILON_CAP
    assert eps_of([5, 5, 5], [1, 2, 3], cap=7.0) == 7.0
    # spread 0.019 < 0.01 * 2 = 0.02 -> still capped
    assert eps_of([2, 2, 2.019], [1, 2, 3]) == EPSILON_CAP
    # spread 0.021 >= 0.02 -> rules are tried. Medians 2 = 2 -> pos = u; u is peakier.
    #   one threshold: t=1, 2: FNR 0 -> dropped; t=2.021: FNR 2/3, FPR 1/3 -> 0; t=3: -> 0
    #   [2, 2] inside = u: u outside {2.021} FNR 1/3, r inside {2} FPR 1/3 -> log(2 - 3d)
    #   [2, 2.021]: FNR 0 -> dropped; other intervals -> 0
    assert eps_of([2, 2, 2.021], [1, 2, 3]) == pytest.approx(LN2, abs=1e-12)


def test_perfect_separation_is_infinite_then_capped():
    # u = [1, 2, 3], r = [4, 5, 6]: r has the larger median -> pos = r.
    # one threshold t = 4: every r >= 4 (FNR 0), no u >= 4 (FPR 0) -> inf -> cap.
    assert eps_of([1, 2, 3], [4, 5, 6]) == EPSILON_CAP
    # two constant populations (spreads 0 and 0 are not "peaky"): t = 6 separates them -> cap
    assert eps_of([5, 5, 5], [6, 6, 6]) == EPSILON_CAP


def test_identical_constants_keep_no_rule_and_give_zero():
    # u = r = [5, 5, 5]: the only threshold 5 calls everything pos (FNR 0, FPR 1) -> dropped;
    # [5, 5] calls everything peakier -> dropped. No rule survives -> epsilon 0.
    assert eps_of([5, 5, 5], [5, 5, 5]) == 0.0


def test_rules_with_exactly_one_zero_rate_are_dropped():
    # u = [1, 2, 4], r = [3, 5, 6]: medians 2 < 5 -> pos = r; spreads 3 = 3 -> inside = u.
    # one threshold (">= t is r"):
    #   t=1: FNR 0, FPR 1      -> dropped      t=2: FNR 0, FPR 2/3 -> dropped
    #   t=3: FNR 0, FPR 1/3    -> dropped      (kept, these would give -log 0 = inf!)
    #   t=4: FNR 1/3 ({3}), FPR 1/3 ({4}) -> log(1 - d - 1/3) - log(1/3) = log(2 - 3d)
    #   t=5: FNR 1/3, FPR 0    -> dropped      t=6: FNR 2/3, FPR 0 -> dropped
    # two thresholds (inside called u; FNR = u outside, FPR = r inside):
    #   [1,3]: u in {1,2} FNR 1/3, r in {3} FPR 1/3 -> log(2 - 3d); [2,4]: same -> log(2 - 3d)
    #   [1,1] [1,2] [2,2] [4,4]: FPR 0, FNR > 0 -> dropped; [1,4] [1,5] [1,6]: FNR 0 -> dropped
    #   every other interval has rates in {1/3, 2/3, 1} with FNR + FPR >= 1 -> clipped to 0
    # epsilon = log(2 - 3d) = 0.693132...; one point bucket [0.5, 1) -> 1/2 for N = 3
    eps = eps_of([1, 2, 4], [3, 5, 6])
    assert eps == pytest.approx(LN2, abs=1e-12)
    assert points(np.array([eps]), 3).tolist() == [0.5]


def test_two_threshold_rule_catches_a_nested_population():
    # u = [2, 3, 4], r = [0, 3, 10]: medians 3 = 3 -> pos = u; spreads 2 vs 10 -> u is peakier
    # (2 >= 1% of 10, not capped).
    # one threshold (">= t is u"), pooled {0, 2, 3, 4, 10}:
    #   t=0, 2: FNR 0 -> dropped; t=3: FNR 1/3, FPR 2/3 -> < 0 -> 0;
    #   t=4: FNR 2/3, FPR 1/3 -> 0; t=10: FNR 1, FPR 1/3 -> log(2/3 - d) < 0, other term vacuous -> 0
    # two thresholds (inside called u): [2,3]: u outside {4} FNR 1/3, r inside {3} FPR 1/3
    #   -> log(2 - 3d); [3,4] the same; [2,4]: FNR 0, FPR 1/3 -> dropped
    assert eps_of([2, 3, 4], [0, 3, 10]) == pytest.approx(LN2, abs=1e-12)


def test_tie_conventions_follow_the_reference():
    # u = [0, 1, 2], r = [1, 1, 3]: medians 1 = 1 -> pos = u (tie -> unlearned);
    # spreads 2 = 2 -> the two-threshold rule calls the *negative* one (r) inside.
    #   one threshold (">= t is u"): t=0: FNR 0 -> dropped; t=1: FNR 1/3, FPR 1 -> 0;
    #   t=2: FNR 2/3, FPR 1/3 -> 0; t=3: FNR 1, FPR 1/3 -> 0
    #   [1, 1] inside = r: r outside {3} FNR 1/3, u inside {1} FPR 1/3 -> log(2 - 3d)
    assert eps_of([0, 1, 2], [1, 1, 3]) == pytest.approx(LN2, abs=1e-12)
    # roles swapped: pos = [1, 1, 3], inside = [0, 1, 2]:
    #   [0,1] and [1,2]: FNR 1/3, FPR 2/3 -> 0; [1,1]: FNR 2/3, FPR 2/3 -> 0; [0,2]: FNR 0 -> dropped
    #   one threshold: t=1: FNR 0 -> dropped; t=2: FNR 2/3, FPR 1/3 -> 0; t=3: FPR 0 -> dropped
    # so on exact ties the labelling matters, as in the reference code
    assert eps_of([1, 1, 3], [0, 1, 2]) == 0.0


def test_unequal_rates_use_the_first_term():
    # N = 4. u = [1, 1, 5, 5], r = [5, 6, 6, 8]: medians 3 < 6 -> pos = r; spreads 4 > 3 -> r is
    # the peakier one, called inside [lo, hi] (FNR = r outside, FPR = u inside).
    #   one threshold (">= t is r"): t=1, 5: FNR 0; t=6: FPR 0 ({5} < 6 only); t=8: FPR 0 -> all dropped
    #   [5, 6]: r outside {8} FNR 1/4, u inside {5, 5} FPR 2/4:
    #     log(1 - d - 1/2) - log(1/4) = log(2 - 4d) = 0.69313  (the first term wins)
    #     log(1 - d - 1/4) - log(1/2) = log(1.5 - 2d) = 0.40546
    #   [1,1] [1,5] [1,6] [5,5]: FNR + FPR >= 1 -> 0; [1,8] [5,8]: FNR 0; [6,6] [6,8] [8,8]: FPR 0
    u, r = [1, 1, 5, 5], [5, 6, 6, 8]
    eps = eps_of(u, r)
    assert eps == pytest.approx(math.log(2 - 4 * D), abs=1e-12)
    # N = 4: bound ceil(ln 3) = 2; 0.693 is in [0.5, 1) -> 1/2
    assert points(np.array([eps]), 4).tolist() == [0.5]


def test_delta_enters_the_formula():
    # same example as the dropped-rule test with d = 0.1: log(1 - 0.1 - 1/3) - log(1/3) = log(1.7)
    assert eps_of([1, 2, 4], [3, 5, 6], delta=0.1) == pytest.approx(math.log(1.7), abs=1e-12)


def test_examples_are_independent_columns():
    u = np.array([[1, 5, 1], [2, 5, 2], [4, 5, 3]], float)
    r = np.array([[3, 1, 4], [5, 2, 5], [6, 3, 6]], float)
    np.testing.assert_allclose(epsilon_per_example(u, r, **EVERY), [LN2, EPSILON_CAP, EPSILON_CAP])


def test_points_buckets_at_the_edges():
    # N = 4: bound = ceil(ln 3) = ceil(1.0986) = 2 -> buckets [0,.5) [.5,1) [1,1.5) [1.5,2)
    eps = np.array([0.0, 0.49, 0.5, 0.99, 1.0, 1.49, 1.5, 1.99, 2.0, 50.0])
    expected = [1, 1, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125, 0, 0]
    assert points(eps, 4).tolist() == expected
    # N = 3: bound = ceil(ln 2) = 1 -> only [0, .5) and [.5, 1) score
    assert points(np.array([0.49, 0.5, 0.999, 1.0]), 3).tolist() == [1, 0.5, 0.5, 0]
    # N = 512 (the competition): bound = ceil(ln 511) = ceil(6.236) = 7 -> 14 buckets
    assert points(np.array([6.99, 7.0]), 512).tolist() == [0.5**13, 0.0]
    # N = 2: bound = ceil(ln 1) = 0 -> nothing scores
    assert points(np.array([0.0]), 2).tolist() == [0.0]
    with pytest.raises(ValueError, match="n_models"):
        points(np.array([0.0]), 1)


def test_forgetting_quality_is_the_mean_of_points():
    # columns: identical (eps 0 -> 1), dropped-rule case (eps ln 2 -> 1/2), separable (cap -> 0)
    u = np.array([[1, 1, 1], [2, 2, 2], [3, 4, 3]], float)
    r = np.array([[1, 3, 4], [2, 5, 5], [3, 6, 6]], float)
    assert forgetting_quality(u, r, **EVERY) == pytest.approx((1 + 0.5 + 0) / 3)


def test_competition_score():
    # F = 0.5; retain: mean(0.8, 0.9) = 0.85 over mean(1.0, 0.7, 1.0) = 0.9 -> 17/18;
    # test: 0.6 / 0.8 = 3/4 -> 0.5 * 17/18 * 3/4 = 17/48
    score = competition_score(
        0.5,
        retain_utility_unlearned=[0.8, 0.9],
        retain_utility_retrained=[1.0, 0.7, 1.0],
        test_utility_unlearned=0.6,
        test_utility_retrained=[0.8],
    )
    assert score == pytest.approx(17 / 48)
    with pytest.raises(ValueError, match="non-zero"):
        competition_score(
            0.5,
            retain_utility_unlearned=1,
            retain_utility_retrained=0,
            test_utility_unlearned=1,
            test_utility_retrained=1,
        )


def test_bad_shapes_and_values_are_named():
    with pytest.raises(ValueError, match="same shape"):
        epsilon_per_example(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="retrained confidences contain NaN"):
        epsilon_per_example(np.zeros((3, 1)), np.full((3, 1), np.nan))


def test_grid_and_window_reproduce_metric_py_where_exact_thresholds_differ():
    # metric.py's own output at N = 512 (competition_forgetting_quality.json). There a threshold
    # at every pooled score and the reference's 0.01 grid give different epsilons (the grid
    # misses partitions), and so do every interval and the reference's window (it misses tail
    # rules): the default search must be the reference's in both respects.
    cases = [c for c in load("competition_forgetting_quality.json")["cases"] if c["n"] == 512]
    grid_matters = window_matters = False
    for case in cases:
        u, r, reference = np.array(case["unlearned"]), np.array(case["retrained"]), case["epsilon"]
        exact = epsilon_per_example(u, r, thresholds="exact", window=REFERENCE_WINDOW)
        every = epsilon_per_example(u, r, **EVERY)
        grid_matters |= not np.allclose(exact, reference, rtol=0, atol=1e-3)
        window_matters |= not np.allclose(every, reference, rtol=0, atol=1e-3)
        ours = epsilon_per_example(u, r)  # the defaults: the 0.01 grid, window 2.0
        np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-6, err_msg=case["name"])
        assert forgetting_quality(u, r) == pytest.approx(case["F"], abs=1e-12), case["name"]
        # the exact search in the window reaches every partition the grid reaches, and more;
        # where the grid misses none (two identical N(0, 1)), it is the reference's window
        assert (exact >= np.array(reference) - 1e-6).all(), case["name"]
        if case["name"] == "identical N(0,1)":
            np.testing.assert_allclose(exact, reference, rtol=0, atol=1e-5)  # float32 there
    assert grid_matters and window_matters


def test_reference_window_by_hand():
    # pooled t = [0, 1, 2, 3, 4]; peakier population spans [1, 2] (spread s = 1); window 0.4:
    # hi must lie in [1 + 1 - 0.4, 2 + 0.4] = [1.6, 2.4] and hi - lo in [0.6, 1.4].
    # The pooled set t_i..t_j needs lo in (t_{i-1}, t_i] and hi in [t_j, t_{j+1}):
    #   j=0: hi in [0, 1) misses [1.6, 2.4];  j=3, 4: hi >= 3 misses it too
    #   j=1: hi in [1.6, 2): i=0 needs hi - lo >= 1.6 > 1.4 -> no; i=1 (lo in (0, 1]) -> yes
    #   j=2: hi in [2, 2.4]: i=0: >= 2 -> no; i=1: 1..2.4 -> yes; i=2 (lo in (1, 2]): 0..1.4 -> yes
    reached = _reference_window(np.arange(5.0), np.array([1.0, 2.0]), 1.0, 0.4)
    reached &= np.triu(np.ones((5, 5), dtype=bool))
    assert sorted(zip(*np.nonzero(reached))) == [(1, 1), (1, 2), (2, 2)]
