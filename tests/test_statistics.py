"""Percentile bootstrap of the membership-inference AUC."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from lightning_unlearn.evaluation.mia import roc_auc
from lightning_unlearn.evaluation.statistics import (
    bootstrap_auc_interval,
    mann_whitney_auc,
    over_unlearned,
)


def scores(n: int, shift: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g) + shift, torch.randn(n, generator=g)


def test_perfect_separation_gives_a_point_interval():
    # every member scores above every non-member in the data, hence in every resample: AUC 1
    assert bootstrap_auc_interval(torch.arange(100.0, 124.0), torch.arange(24.0)) == (1.0, 1.0)
    # and the reverse: AUC 0 everywhere, wholly below 0.5
    interval = bootstrap_auc_interval(torch.arange(24.0), torch.arange(100.0, 124.0))
    assert interval == (0.0, 0.0)
    assert over_unlearned(interval)


def test_percentile_interval_stays_within_resampled_values():
    # members 23..46 vs non-members 0..23: one tie, AUC (576 - 0.5) / 576. Resampled AUCs are
    # <= 1, so percentile ends are <= 1 (the "basic" interval 2*AUC - q would pass 1 here)
    low, high = bootstrap_auc_interval(torch.arange(23.0, 47.0), torch.arange(24.0))
    assert low < 1.0 and high == 1.0


def test_constant_scores_give_one_half():
    # all ties: each pair counts 1/2 -> AUC 0.5 in every resample
    assert bootstrap_auc_interval(torch.ones(5), torch.ones(7)) == (0.5, 0.5)


def test_resampled_auc_matches_roc_auc():
    # the vectorised statistic is roc_auc (ties 1/2) on each explicit resample
    rng = np.random.default_rng(0)
    pos = np.round(rng.normal(0.3, 1, 24), 1)  # rounding makes ties
    neg = np.round(rng.normal(0.0, 1, 24), 1)
    i, j = rng.integers(0, 24, (50, 24)), rng.integers(0, 24, (50, 24))
    vectorised = mann_whitney_auc(pos[i], neg[j])
    looped = [roc_auc(torch.tensor(pos[a]), torch.tensor(neg[b])) for a, b in zip(i, j)]
    np.testing.assert_allclose(vectorised, looped, rtol=0, atol=1e-12)


def test_interval_contains_point_auc_and_is_deterministic():
    members, non_members = scores(24, 0.5, seed=1)
    low, high = bootstrap_auc_interval(members, non_members, seed=3)
    assert low <= roc_auc(members, non_members) <= high
    assert 0.0 <= low < high <= 1.0
    assert bootstrap_auc_interval(members, non_members, seed=3) == (low, high)
    assert bootstrap_auc_interval(members, non_members, seed=4) != (low, high)
    # a wider confidence gives a wider interval on the same resamples
    low90, high90 = bootstrap_auc_interval(members, non_members, seed=3, confidence=0.9)
    assert low <= low90 and high90 <= high


def test_width_shrinks_with_more_documents():
    small = bootstrap_auc_interval(*scores(24, 0.5, seed=1))
    large = bootstrap_auc_interval(*scores(480, 0.5, seed=1))
    assert large[1] - large[0] < (small[1] - small[0]) / 2


def test_non_finite_scores_are_dropped_and_empty_sides_give_nan():
    members = torch.tensor([3.0, 4.0, math.nan, math.inf])
    assert bootstrap_auc_interval(members, torch.tensor([1.0, 2.0])) == (1.0, 1.0)
    low, high = bootstrap_auc_interval(torch.tensor([math.nan]), torch.tensor([1.0]))
    assert math.isnan(low) and math.isnan(high)
    assert not over_unlearned((low, high))


def test_fast_enough():
    members, non_members = scores(24, 0.5, seed=1)
    start = time.perf_counter()
    bootstrap_auc_interval(members, non_members, n_resamples=1000)
    assert time.perf_counter() - start < 1.0  # a few ms; generous for loaded CI machines


def test_over_unlearned():
    assert over_unlearned((0.30, 0.49))
    assert not over_unlearned((0.30, 0.50))  # 0.5 is inside
    assert not over_unlearned((0.45, 0.70))


def test_bad_options():
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_auc_interval(torch.ones(3), torch.ones(3), confidence=1.0)
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_auc_interval(torch.ones(3), torch.ones(3), n_resamples=0)
