"""Membership-inference scores per document, and how well they separate members from non-members.

Every evaluation chunk is one *document*: a score is computed per chunk from one forward pass
(:func:`lightning_unlearn.losses.token_statistics`). Scores follow one convention: **higher means
"more likely a member"** (a training document). For unlearning, the forget split plays the members
(positives) and the approximate split — in-distribution text the model never saw — the non-members
(negatives). A well-unlearned model has an AUC near 0.5: the attack can no longer tell them apart.

Scores (all in nats, natural logarithms):

* ``loss``: ``-mean NLL`` of the document's target tokens (Yeom et al. 2018).
* ``zlib``: ``-mean NLL / zlib_len``, the ratio of the log-perplexity to the zlib entropy of the
  text, where ``zlib_len`` is ``len(zlib.compress(text.encode("utf-8")))`` in bytes (Carlini et al.
  2021, "Extracting Training Data from Large Language Models"; the normalisation used by the Min-K%
  reference code). Text that is easy for the model *relative to how compressible it is* scores high.
* ``min_k``: Min-K% Prob (Shi et al. 2024, arXiv:2310.16789): the mean of the lowest ``k`` fraction
  of the document's token log-probabilities.
* ``min_k_plus_plus``: Min-K%++ (Zhang et al. 2024, arXiv:2404.02936): Min-K% on the standardised
  log-probability ``(log p(x_t) - mu_t) / sigma_t``, where ``mu_t`` and ``sigma_t`` are the mean and
  standard deviation of ``log p(.)`` under the model's own next-token distribution.

Min-K% keeps ``max(1, floor(k * n))`` tokens of a document with ``n`` target tokens.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from .base import MetricResult, TokenMetric
from .documents import SplitDocuments, padded
from .statistics import bootstrap_auc_interval, mann_whitney_auc, over_unlearned

MIA_SCORES = ("loss", "zlib", "min_k", "min_k_plus_plus")

__all__ = [
    "MIA_SCORES",
    "loss_score",
    "zlib_score",
    "min_k_score",
    "min_k_plus_plus_score",
    "mia_scores",
    "roc_auc",
    "tpr_at_fpr",
    "MembershipInference",
]

_SIGMA_FLOOR = 1e-8


def _check_mask(values: Tensor, mask: Tensor) -> Tensor:
    if values.shape != mask.shape or values.dim() != 2:
        raise ValueError(
            f"expected per-token values and mask of the same shape [batch, seq], got "
            f"{tuple(values.shape)} and {tuple(mask.shape)}"
        )
    return mask.bool()


def loss_score(logprob: Tensor, mask: Tensor) -> Tensor:
    """``-mean NLL`` = mean token log-probability per document, shape ``[batch]``.

    Documents without target tokens give NaN.
    """
    mask = _check_mask(logprob, mask)
    count = mask.sum(dim=1)
    total = (logprob.double() * mask).sum(dim=1)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, math.nan))


def zlib_score(logprob: Tensor, mask: Tensor, zlib_len: Tensor) -> Tensor:
    """``-mean NLL / zlib_len`` per document (Carlini et al. 2021), shape ``[batch]``.

    Args:
        logprob: per-token log-probabilities of the true tokens, ``[batch, seq]``.
        mask: real target positions, ``[batch, seq]``.
        zlib_len: bytes of ``zlib.compress(text.encode("utf-8"))`` per document, ``[batch]``.
    """
    zlib_len = torch.as_tensor(zlib_len, device=logprob.device).double().reshape(-1)
    if zlib_len.numel() != logprob.size(0):
        raise ValueError(
            f"zlib_len has {zlib_len.numel()} entries for a batch of {logprob.size(0)} documents"
        )
    if (zlib_len <= 0).any():
        raise ValueError(f"zlib_len must be > 0 bytes for every document, got {zlib_len.tolist()}")
    return loss_score(logprob, mask) / zlib_len


def _lowest_fraction_mean(values: Tensor, mask: Tensor, k: float) -> Tensor:
    if not 0.0 < k <= 1.0:
        raise ValueError(f"the Min-K% fraction k must be in (0, 1], got {k}")
    mask = _check_mask(values, mask)
    count = mask.sum(dim=1)
    keep = torch.clamp((count.double() * k).floor().long(), min=1)
    ordered = values.double().masked_fill(~mask, math.inf).sort(dim=1).values
    positions = torch.arange(values.size(1), device=values.device).unsqueeze(0)
    chosen = positions < keep.unsqueeze(1)
    total = ordered.masked_fill(~chosen, 0.0).sum(dim=1)
    return torch.where(count > 0, total / keep, torch.full_like(total, math.nan))


def min_k_score(logprob: Tensor, mask: Tensor, *, k: float = 0.2) -> Tensor:
    """Min-K% Prob (Shi et al. 2024): mean of the lowest ``k`` fraction of token log-probs."""
    return _lowest_fraction_mean(logprob, mask, k)


def min_k_plus_plus_score(
    logprob: Tensor, mu: Tensor, sigma: Tensor, mask: Tensor, *, k: float = 0.2
) -> Tensor:
    """Min-K%++ (Zhang et al. 2024): Min-K% on ``(logprob - mu) / sigma``.

    A position where the model's distribution has zero spread (``sigma == 0``) has
    ``logprob == mu`` and is scored 0.
    """
    standardised = (logprob.double() - mu.double()) / sigma.double().clamp_min(_SIGMA_FLOOR)
    return _lowest_fraction_mean(standardised, mask, k)


def mia_scores(
    stats: dict[str, Tensor], zlib_len: Tensor | None = None, *, k: float = 0.2
) -> dict[str, Tensor]:
    """All four scores per document from :func:`~lightning_unlearn.losses.token_statistics`.

    Without ``zlib_len`` the ``zlib`` score is NaN.
    """
    logprob, mask = stats["logprob"], stats["mask"]
    loss = loss_score(logprob, mask)
    zlib = (
        torch.full_like(loss, math.nan) if zlib_len is None else zlib_score(logprob, mask, zlib_len)
    )
    return {
        "loss": loss,
        "zlib": zlib,
        "min_k": min_k_score(logprob, mask, k=k),
        "min_k_plus_plus": min_k_plus_plus_score(logprob, stats["mu"], stats["sigma"], mask, k=k),
    }


# ----------------------------------------------------------------------------------- separation
def _clean(scores: Tensor) -> Tensor:
    scores = torch.as_tensor(scores).double().reshape(-1)
    return scores[torch.isfinite(scores)]


def roc_auc(members: Tensor, non_members: Tensor) -> float:
    """Area under the ROC curve of a score, members positive (Mann-Whitney U).

    ``AUC = P(s_member > s_non_member) + 0.5 * P(s_member == s_non_member)``: 1.0 when every member
    scores higher, 0.5 for identical distributions, ties count one half. Non-finite scores are
    dropped; NaN when either side is empty.
    """
    pos, neg = _clean(members), _clean(non_members)
    if pos.numel() == 0 or neg.numel() == 0:
        return math.nan
    return float(mann_whitney_auc(pos.double().numpy(), neg.double().numpy()))


def tpr_at_fpr(members: Tensor, non_members: Tensor, fpr: float = 0.05) -> float:
    """True-positive rate at a false-positive rate of at most ``fpr`` (Carlini et al. 2022).

    A document is called a member when its score is ``>= threshold``. Over every threshold that
    flags at most ``fpr`` of the non-members, the largest fraction of members flagged. Tied scores
    are flagged together, so ties never let a threshold exceed ``fpr``.
    """
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must be in [0, 1], got {fpr}")
    pos, neg = _clean(members), _clean(non_members)
    if pos.numel() == 0 or neg.numel() == 0:
        return math.nan
    thresholds = torch.unique(torch.cat([pos, neg]))
    tpr = (pos.unsqueeze(0) >= thresholds.unsqueeze(1)).double().mean(dim=1)
    false = (neg.unsqueeze(0) >= thresholds.unsqueeze(1)).double().mean(dim=1)
    allowed = false <= fpr + 1e-12
    # the threshold above every score flags nothing: TPR 0 at FPR 0
    return float(tpr[allowed].max()) if allowed.any() else 0.0


class MembershipInference(TokenMetric):
    """Membership-inference attacks separating the member split (forget) from the non-member
    split (approximate: unseen text of the same kind): per document, the four scores of
    :func:`mia_scores`; per attack, the ROC AUC (``mia/{score}_auc``, members positive) and the
    true-positive rate at a false-positive rate of ``fpr`` (``mia/{score}_tpr_at_5_fpr`` for 5%).

    A well-unlearned model scores an AUC near 0.5. Values are absent when either split was not
    evaluated (the checks during training score the forget split only).

    Args:
        k: fraction of lowest tokens for Min-K% and Min-K%++ (papers: 0.2; open-unlearning's TOFU
            and MUSE evaluations, and this library's TOFU / MUSE configs: 0.4). The labels name it.
        members: the split whose documents the model was trained on (positives).
        non_members: the split of unseen in-distribution documents (negatives).
        fpr: false-positive rate at which the true-positive rate is reported.
        auc_tolerance: the verdict passes when the loss attack's AUC is within this of 0.5.
        confidence: coverage of the bootstrap interval of every AUC (over documents:
            ``mia/{score}_auc_low`` / ``_high``); ``None`` skips the intervals.
    """

    prefix = "mia"

    def __init__(
        self,
        *,
        k: float = 0.2,
        members: str = "forget",
        non_members: str = "approximate",
        fpr: float = 0.05,
        auc_tolerance: float = 0.05,
        confidence: float | None = 0.95,
    ) -> None:
        if not 0.0 < k <= 1.0:
            raise ValueError(f"the Min-K% fraction k must be in (0, 1], got {k}")
        if not 0.0 <= fpr <= 1.0:
            raise ValueError(f"fpr must be in [0, 1], got {fpr}")
        self.k, self.members, self.non_members = float(k), members, non_members
        self.fpr, self.auc_tolerance = float(fpr), float(auc_tolerance)
        self.confidence = confidence

    def scores(self, docs: SplitDocuments) -> dict[str, Tensor]:
        """The four attacks' scores of every document of a split (higher: more likely member)."""
        logprob, mask = padded(docs.logprob)
        stats = {"logprob": logprob, "mask": mask}
        stats["mu"] = padded(docs.mu)[0] if docs.mu else torch.zeros_like(logprob)
        stats["sigma"] = padded(docs.sigma, fill=1.0)[0] if docs.sigma else torch.ones_like(logprob)
        zlib_len = None if docs.zlib_len is None else torch.tensor(docs.zlib_len)
        return mia_scores(stats, zlib_len, k=self.k)

    def compute(self, documents: Mapping[str, SplitDocuments]) -> MetricResult:
        result = MetricResult()
        scored = {
            s: self.scores(documents[s]) for s in (self.members, self.non_members) if s in documents
        }
        for split, scores in scored.items():
            result.documents[split] = {f"mia/{name}": scores[name].tolist() for name in MIA_SCORES}
        if len(scored) < 2:
            return result
        pos, neg = scored[self.members], scored[self.non_members]
        tpr_key = f"tpr_at_{self.fpr * 100:g}_fpr"
        for name in MIA_SCORES:
            add_auc(result, f"mia/{name}", pos[name], neg[name], self.confidence)
            result.values[f"mia/{name}_{tpr_key}"] = tpr_at_fpr(pos[name], neg[name], self.fpr)
        return result

    def label(self, key: str) -> str:
        name = key.removeprefix("mia/")
        for score in MIA_SCORES:
            if name == f"{score}_auc":
                # the Min-K% papers' k is 0.2, open-unlearning's 0.4: the label says which
                return f"MIA AUC {score}" + (f" (k = {self.k:g})" if "min_k" in score else "")
        return None  # TPRs and intervals: in report.json (intervals in the verdict), not the table

    def verdict(self, report: Mapping[str, Any]) -> list[str]:
        after = report.get("after") or {}
        auc = after.get("mia/loss_auc")
        if auc is None:
            return []
        ok = abs(auc - 0.5) <= self.auc_tolerance
        lines = [
            f"{'PASS' if ok else 'FAIL'}: loss-MIA AUC {auc:.3f} "
            f"{'is' if ok else 'is not'} within ±{self.auc_tolerance:g} of 0.5 (chance)"
        ]
        k = {f"mia/{name}": f"k = {self.k:g}" for name in MIA_SCORES if "min_k" in name}
        return lines + auc_verdicts(after, [f"mia/{name}" for name in MIA_SCORES], k)


def add_auc(
    result: MetricResult, key: str, members: Tensor, non_members: Tensor, confidence: float | None
) -> None:
    """``{key}_auc`` (members positive) and, with ``confidence``, its bootstrap interval over
    documents, ``{key}_auc_low`` / ``{key}_auc_high``."""
    result.values[f"{key}_auc"] = roc_auc(members, non_members)
    if confidence is not None:
        low, high = bootstrap_auc_interval(members, non_members, confidence=confidence)
        result.values[f"{key}_auc_low"], result.values[f"{key}_auc_high"] = low, high


def auc_verdicts(
    after: Mapping[str, Any], keys: list[str], qualifiers: Mapping[str, str] | None = None
) -> list[str]:
    """Every attack's AUC of the unlearned model with its interval; *over-unlearned* when the
    whole interval lies below 0.5 (the forget set now stands out as less familiar than unseen
    text, which itself tells an attacker it was removed). ``qualifiers``: per key, what follows
    the attack's name (its k, its gradient's scope)."""
    lines = []
    for key in keys:
        auc, low, high = (after.get(f"{key}_auc{s}") for s in ("", "_low", "_high"))
        if auc is None or low is None or high is None:
            continue
        name = key.split("/", 1)[-1]
        if qualifiers and qualifiers.get(key):
            name += f" ({qualifiers[key]})"
        if over_unlearned((low, high)):
            lines.append(
                f"OVER-UNLEARNED: {key.split('/')[0]} {name} AUC {auc:.3f}, 95% interval "
                f"[{low:.3f}, {high:.3f}] lies below 0.5: the forget documents now look less "
                "familiar than unseen text"
            )
        else:
            lines.append(
                f"{key.split('/')[0]} {name} AUC {auc:.3f}, 95% interval [{low:.3f}, {high:.3f}]"
            )
    return lines
