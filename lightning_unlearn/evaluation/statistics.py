"""Uncertainty of membership-inference AUCs: a percentile bootstrap over documents.

An AUC from a few dozen forget and approximate documents is noisy; before calling a model
"over-unlearned" (AUC below 0.5: forget documents look *less* like members than unseen text, which
itself leaks that they were removed) the whole confidence interval should lie below 0.5.

The AUC is the Mann-Whitney form of :func:`lightning_unlearn.evaluation.mia.roc_auc`: members
(forget documents) are positives, higher scores mean "more likely a member", ties count one half and
non-finite scores are dropped. The bootstrap resamples the two sides independently with replacement
(Efron & Tibshirani 1993, ch. 13, percentile interval) via :func:`scipy.stats.bootstrap`.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats
from torch import Tensor

__all__ = ["bootstrap_auc_interval", "mann_whitney_auc", "over_unlearned"]

_PAIRS_PER_BATCH = 5_000_000


def _finite(scores: Tensor | np.ndarray) -> np.ndarray:
    values = np.asarray(scores.detach().cpu() if isinstance(scores, Tensor) else scores, float)
    values = values.reshape(-1)
    return values[np.isfinite(values)]


def mann_whitney_auc(members: np.ndarray, non_members: np.ndarray, axis: int = -1) -> np.ndarray:
    """The area under the ROC curve, members positive, along ``axis`` (every resample or row at
    once): the Mann-Whitney ``U / (n_pos * n_neg)`` from average ranks (scipy), ties counting one
    half. The one AUC of the library: :func:`~lightning_unlearn.evaluation.mia.roc_auc`, the
    bootstrap here and the attacks' ends interval call it."""
    members, non_members = np.moveaxis(members, axis, -1), np.moveaxis(non_members, axis, -1)
    n_pos, n_neg = members.shape[-1], non_members.shape[-1]
    ranks = stats.rankdata(np.concatenate([members, non_members], axis=-1), axis=-1)
    u = ranks[..., :n_pos].sum(axis=-1) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def bootstrap_auc_interval(
    members: Tensor | np.ndarray,
    non_members: Tensor | np.ndarray,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the membership-inference AUC.

    Each resample draws ``len(members)`` members and ``len(non_members)`` non-members with
    replacement, independently; its AUC is the same Mann-Whitney statistic, with the same ranks, as
    :func:`~lightning_unlearn.evaluation.mia.roc_auc` (vectorised over resamples with
    :func:`scipy.stats.rankdata`; the tests check it against ``roc_auc`` resample by resample). The
    interval is the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the
    resampled AUCs.

    Args:
        members: membership scores of the member documents (the forget split), higher = member.
        non_members: scores of the non-member documents (the approximate split).
        n_resamples: bootstrap resamples.
        confidence: coverage of the two-sided interval, in ``(0, 1)``.
        seed: seed of the resampling generator; the same seed gives the same interval.

    Returns:
        ``(low, high)``; ``(nan, nan)`` when either side has no finite score.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    pos, neg = _finite(members), _finite(non_members)
    if pos.size == 0 or neg.size == 0:
        return math.nan, math.nan
    result = stats.bootstrap(
        (pos, neg),
        mann_whitney_auc,
        n_resamples=n_resamples,
        batch=max(1, _PAIRS_PER_BATCH // (pos.size + neg.size)),
        vectorized=True,
        paired=False,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return float(low), float(high)


def over_unlearned(interval: tuple[float, float]) -> bool:
    """True when the whole AUC interval lies below 0.5 (forget documents look like non-members).

    An interval with a NaN end is never "over-unlearned".
    """
    low, high = interval
    return bool(high < 0.5 and low <= high)
