"""MUSE and TOFU formulas against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from test_reference_numbers import load

from lightning_unlearn.evaluation.benchmarks_math import (
    normalised_answer_probability,
    privleak,
    tofu_forget_quality,
    tofu_model_utility,
    truth_ratio,
    truth_ratio_score,
)

NAN = math.nan
log = math.log


def test_privleak_by_hand():
    # (0.3 - 0.5) / 0.5 * 100 = -40 (under-unlearned, MUSE convention); (0.6 - 0.4) / 0.4 * 100 = 50
    assert privleak(0.3, 0.5) == pytest.approx(-40.0)
    assert privleak(0.6, 0.4) == pytest.approx(50.0)
    assert privleak(0.5, 0.5) == 0.0
    with pytest.raises(ValueError, match="auc_retrain"):
        privleak(0.5, 0.0)


def test_truth_ratio_by_hand_with_missing_answers():
    # Q1: perturbed P^(1/|a|) = 0.1, 0.2, 0.4 -> geometric mean (0.008)^(1/3) = 0.2;
    #     paraphrased 0.5 -> R = 0.2 / 0.5 = 0.4
    # Q2: perturbed 0.25, 1.0, (missing) -> sqrt(0.25) = 0.5; paraphrased 0.25 -> R = 2
    # Q3: no perturbed answer -> NaN
    perturbed = torch.tensor(
        [[log(0.1), log(0.2), log(0.4)], [log(0.25), log(1.0), NAN], [NAN, NAN, NAN]]
    )
    paraphrased = torch.tensor([log(0.5), log(0.25), log(0.3)])
    ratios = truth_ratio(perturbed, paraphrased)
    assert ratios.dtype == torch.float64
    assert ratios[:2].tolist() == pytest.approx([0.4, 2.0])
    assert math.isnan(ratios[2])
    with pytest.raises(ValueError, match=r"\[Q, P\]"):
        truth_ratio(perturbed, paraphrased[:2])


def test_truth_ratio_score_by_hand_and_against_tofus_output():
    # mean(max(0, 1 - 0.4), max(0, 1 - 2)) = mean(0.6, 0) = 0.3; the NaN question is skipped
    assert truth_ratio_score(torch.tensor([0.4, 2.0, NAN])) == pytest.approx(0.3)
    assert math.isnan(truth_ratio_score([NAN]))
    # TOFU's aggregate_eval_stat.py on its per-question losses (tofu_aggregate.json): the score of
    # the ratios of retain, real authors and world facts is its "Truth Ratio" of each set
    reference = load("tofu_aggregate.json")
    for file, name in (("eval_log.json", "Retain"),
                       ("eval_real_author_wo_options.json", "Real Authors"),
                       ("eval_real_world_wo_options.json", "Real World")):  # fmt: skip
        data = reference["unlearned"][file]
        keys = list(data["avg_gt_loss"])  # TOFU stores losses: minus the mean token log-prob
        perturbed = -torch.tensor(
            [data["average_perturb_loss"][k] for k in keys], dtype=torch.float64
        )
        paraphrased = -torch.tensor(
            [data["avg_paraphrased_loss"][k] for k in keys], dtype=torch.float64
        )
        score = truth_ratio_score(truth_ratio(perturbed, paraphrased))
        assert score == pytest.approx(reference["model_utility"][f"Truth Ratio {name}"], abs=1e-12)


def test_forget_quality_by_hand():
    # u = [1, 2] vs r = [3, 4]: D = 1. Exact two-sided p-value: of the C(4, 2) = 6 ways to split
    # four values into two pairs, 2 are fully separated (D = 1) -> p = 2/6 = 1/3
    assert tofu_forget_quality([1.0, 2.0], [3.0, 4.0]) == pytest.approx(1 / 3)
    # identical samples: D = 0 -> p = 1
    assert tofu_forget_quality([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == pytest.approx(1.0)


def test_forget_quality_is_scipy_ks_pvalue_and_invariant_to_tofu_inverse():
    unlearned = np.array([0.4, 2.0, 0.9, 1.1, 0.8, 1.3])
    retain = np.array([0.5, 0.6, 0.7, 3.0, 0.65])
    expected = stats.ks_2samp(unlearned, retain).pvalue
    assert tofu_forget_quality(torch.tensor(unlearned), torch.tensor(retain)) == expected
    # TOFU feeds 1/R, open-unlearning R: KS only sees the order -> same p-value
    assert tofu_forget_quality(1 / unlearned, 1 / retain) == pytest.approx(expected, abs=1e-12)
    # NaN truth ratios (questions without perturbed answers) are dropped
    assert tofu_forget_quality(np.append(unlearned, NAN), retain) == expected
    with pytest.raises(ValueError, match="both sides"):
        tofu_forget_quality([NAN], retain)


def test_normalised_answer_probability_by_hand():
    # Q1: 0.5 / (0.5 + 0.25 + 0.25) = 0.5;  Q2: 0.6 / (0.6 + 0.2) = 0.75 (missing answer skipped)
    answer = torch.tensor([log(0.5), log(0.6)])
    perturbed = torch.tensor([[log(0.25), log(0.25)], [log(0.2), NAN]])
    probs = normalised_answer_probability(answer, perturbed)
    assert probs.tolist() == pytest.approx([0.5, 0.75])
    with pytest.raises(ValueError, match=r"\[Q, P\]"):
        normalised_answer_probability(answer[:1], perturbed)


def test_model_utility_by_hand():
    # hmean(1, 0.5, 0.25, 1 x 6) = 9 / (1 + 2 + 4 + 6) = 9/13
    values = [1.0, 0.5, 0.25] + [1.0] * 6
    assert tofu_model_utility(values) == pytest.approx(9 / 13)
    assert tofu_model_utility([0.0] + values[1:]) == 0.0
    with pytest.raises(ValueError, match="non-negative"):
        tofu_model_utility([-0.1, 1.0])
    with pytest.raises(ValueError, match="non-negative"):
        tofu_model_utility([])
