"""Benchmark formulas of MUSE and TOFU as pure functions of per-question / per-document numbers.

* MUSE (Shi et al. 2024, "MUSE: Machine Unlearning Six-Way Evaluation for Language Models",
  arXiv:2407.06460): PrivLeak, the relative AUC gap of a membership-inference attack between the
  unlearned and the retrained model.
* TOFU (Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning for LLMs", arXiv:2401.06121):
  truth ratio, forget quality (KS test), the truth-ratio utility score, the normalised answer
  probability and model utility (harmonic mean). Reference code: ``locuslab/tofu``
  ``aggregate_eval_stat.py``, and ``locuslab/open-unlearning`` ``src/evals/metrics``.

TOFU's inputs are *mean token log-probabilities* of an answer given its question,
``log P(a|q) / |a|``, so ``exp`` of one is ``P(a|q)^(1/|a|)``, the length-normalised probability.
Missing perturbed answers (questions with fewer than P) are NaN in the ``[Q, P]`` inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy import stats
from torch import Tensor

__all__ = [
    "MUSE_RETRAIN_AUC",
    "privleak",
    "truth_ratio",
    "tofu_forget_quality",
    "truth_ratio_score",
    "forget_truth_ratio_score",
    "normalised_answer_probability",
    "tofu_model_utility",
]


MUSE_RETRAIN_AUC = {"news": 0.4772, "books": 0.5393}
"""The retrained model's Min-K% 40 AUC (forget vs holdout, holdout positive) that MUSE's ``eval.py``
divides by: ``constants.py`` ``AUC_RETRAIN[corpus]["forget_holdout_Min-40%"]`` (swj0419/muse_bench),
measured by the MUSE authors on their retrained Llama-2-7B models."""


def privleak(auc_unlearned: float, auc_retrain: float) -> float:
    """MUSE PrivLeak in percent: ``(AUC_unlearned - AUC_retrain) / AUC_retrain * 100``.

    Both AUCs are of the same Min-K% Prob attack separating the forget set from the holdout set,
    one under the unlearned model and one under the model retrained without the forget set
    (Shi et al. 2024, criterion C3 "no privacy leakage"). A good unlearner scores near 0.

    **AUC convention.** MUSE's AUC puts the *holdout* documents as positives (``privleak/scripts/
    get_ppl.py``: ``roc_curve(y, -ppl)`` with ``y = 1`` for holdout), so a model that memorised the
    forget set has AUC near 0 and PrivLeak near -100 (under-unlearning is negative,
    over-unlearning positive). :func:`lightning_unlearn.evaluation.mia.roc_auc` has the opposite
    convention (members positive); pass ``1 - roc_auc(...)`` for each model to reproduce MUSE's
    numbers (open-unlearning's ``privleak`` does the same ``1 - auc`` flip).

    Args:
        auc_unlearned: attack AUC under the unlearned model, MUSE convention.
        auc_retrain: attack AUC under the retrained model, MUSE convention (non-zero).
    """
    if auc_retrain == 0:
        raise ValueError("auc_retrain is 0: PrivLeak divides by the retrained model's AUC")
    return float((auc_unlearned - auc_retrain) / auc_retrain * 100.0)


def truth_ratio(perturbed_logprob_means: Tensor, paraphrased_logprob_mean: Tensor) -> Tensor:
    """TOFU truth ratio ``R_truth`` per question (Maini et al. 2024).

    ``R = (prod_p P(a_p|q)^(1/|a_p|))^(1/P) / P(a~|q)^(1/|a~|)
    = exp(mean_p(perturbed) - paraphrased)``: the geometric mean of the length-normalised
    probabilities of the P perturbed (wrong) answers over that of the paraphrased (right) answer.
    ``R < 1`` means the model prefers the right answer.

    TOFU's ``aggregate_eval_stat.py`` stores the inverse, ``exp(perturbed_loss - paraphrased_loss)
    = 1 / R``; open-unlearning's ``truth_ratio`` stores this ``R`` (``wrong_prob / correct_prob``).

    Args:
        perturbed_logprob_means: ``[Q, P]`` mean token log-probs of the perturbed answers; NaN
            for a missing answer.
        paraphrased_logprob_mean: ``[Q]`` mean token log-prob of the paraphrased answer.

    Returns:
        ``[Q]`` float64; NaN for a question without any perturbed answer.
    """
    perturbed = torch.as_tensor(perturbed_logprob_means).double()
    paraphrased = torch.as_tensor(paraphrased_logprob_mean).double().reshape(-1)
    if perturbed.dim() != 2 or perturbed.size(0) != paraphrased.numel():
        raise ValueError(
            f"expected perturbed [Q, P] and paraphrased [Q], got {tuple(perturbed.shape)} and "
            f"{tuple(paraphrased.shape)}"
        )
    return torch.exp(torch.nanmean(perturbed, dim=1) - paraphrased)


def _without_nan(values: Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    array = torch.as_tensor(values).double().reshape(-1).numpy()
    return array[~np.isnan(array)]


def tofu_forget_quality(
    unlearned_truth_ratios: Tensor | np.ndarray | Sequence[float],
    retain_truth_ratios: Tensor | np.ndarray | Sequence[float],
) -> float:
    """TOFU forget quality: p-value of the two-sample Kolmogorov-Smirnov test on truth ratios.

    Compares the per-question truth ratios **on the forget set** of the unlearned model with those
    of the retain model (trained only on the retain set) on the same forget questions, as TOFU's
    ``get_forget_quality`` (``ks_2samp(unlearn_truth_ratio, retain_truth_ratio).pvalue``) and
    open-unlearning's ``ks_test``. A high p-value: indistinguishable from never having seen the
    data. TOFU feeds ``1 / R`` and open-unlearning ``R``; KS depends only on the order of the
    pooled values, so both give this same p-value. NaN ratios are dropped (open-unlearning skips
    questions without results the same way); uses :func:`scipy.stats.ks_2samp` defaults.

    Args:
        unlearned_truth_ratios: truth ratios of the unlearned model on the forget questions.
        retain_truth_ratios: truth ratios of the retain model on the same forget questions.
    """
    unlearned, retain = _without_nan(unlearned_truth_ratios), _without_nan(retain_truth_ratios)
    if unlearned.size == 0 or retain.size == 0:
        raise ValueError(
            f"forget quality needs truth ratios on both sides, got {unlearned.size} (unlearned) "
            f"and {retain.size} (retain) non-NaN values"
        )
    return float(stats.ks_2samp(unlearned, retain).pvalue)


def truth_ratio_score(ratios: Tensor | np.ndarray | Sequence[float]) -> float:
    """TOFU truth-ratio utility on retain / real-authors / world-facts: ``mean(max(0, 1 - R))``.

    ``R`` is :func:`truth_ratio` (perturbed over paraphrased). TOFU's ``aggregate_eval_stat.py``
    writes ``mean(max(0, 1 - 1/s))`` with its stored ``s = 1 / R``, which is this same quantity;
    open-unlearning's ``true_better`` aggregator writes ``mean(max(0, 1 - R))`` directly. (On the
    forget set TOFU instead reports :func:`forget_truth_ratio_score`.) NaN ratios are skipped; NaN
    when none is left.

    Args:
        ratios: per-question truth ratios ``R``.
    """
    values = _without_nan(ratios)
    return float(np.maximum(0.0, 1.0 - values).mean()) if values.size else math.nan


def forget_truth_ratio_score(ratios: Tensor | np.ndarray | Sequence[float]) -> float:
    """TOFU's truth ratio on the forget set: ``mean(min(R, 1/R))`` (1: no preference between the
    right and the wrong answers, as a model that never learnt them; near 0: a strong preference).

    TOFU's ``aggregate_eval_stat.py`` (``Truth Ratio Forget``: ``mean(minimum(s, 1/s))`` of its
    ``s = 1 / R``, symmetric in ``R`` and ``1/R``) and open-unlearning's ``closer_to_1_better``
    aggregator report this under the name "truth ratio" (open-unlearning adds 1e-10 to ``R`` in
    ``1/R``, a difference below 1e-9 here). NaN ratios are skipped; NaN when none is left.

    Args:
        ratios: per-question truth ratios ``R`` (:func:`truth_ratio`) on the forget questions.
    """
    values = _without_nan(ratios)
    return float(np.minimum(values, 1.0 / values).mean()) if values.size else math.nan


def normalised_answer_probability(
    answer_logprob_mean: Tensor, perturbed_logprob_means: Tensor
) -> Tensor:
    """TOFU probability on real authors / world facts, per question (Maini et al. 2024).

    ``P(a|q)^(1/|a|) / (P(a|q)^(1/|a|) + sum_p P(a_p|q)^(1/|a_p|))``: the length-normalised
    probability of the right answer against it plus the perturbed (wrong) ones, i.e. a softmax
    over the mean log-probs, computed stably. (On the retain and forget sets TOFU reports plain
    ``P(a|q)^(1/|a|)`` instead.)

    Args:
        answer_logprob_mean: ``[Q]`` mean token log-prob of the right answer.
        perturbed_logprob_means: ``[Q, P]`` mean token log-probs of the perturbed answers; NaN
            for a missing answer.

    Returns:
        ``[Q]`` float64 in ``[0, 1]``.
    """
    answer = torch.as_tensor(answer_logprob_mean).double().reshape(-1, 1)
    perturbed = torch.as_tensor(perturbed_logprob_means).double()
    if perturbed.dim() != 2 or perturbed.size(0) != answer.size(0):
        raise ValueError(
            f"expected answer [Q] and perturbed [Q, P], got {answer.size(0)} answers and "
            f"{tuple(perturbed.shape)}"
        )
    logits = torch.cat([answer, perturbed.nan_to_num(nan=-math.inf)], dim=1)
    return torch.softmax(logits, dim=1)[:, 0]


def tofu_model_utility(values: Sequence[float]) -> float:
    """TOFU model utility: harmonic mean (:func:`scipy.stats.hmean`) of the utility numbers.

    In TOFU these are nine: probability, ROUGE-L recall and truth-ratio score on each of the
    retain, real-authors and world-facts sets. Any zero makes the utility 0.

    Args:
        values: the non-negative utility numbers.
    """
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0 or np.isnan(array).any() or (array < 0).any():
        raise ValueError(f"model utility needs non-negative, non-NaN values, got {array.tolist()}")
    return 0.0 if (array == 0).any() else float(stats.hmean(array))
