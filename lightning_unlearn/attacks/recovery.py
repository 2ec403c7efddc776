"""How much of the forgetting an attack undoes, read against the two ends of the scale.

An attack (relearning, quantization) changes every model it is applied to, including models that
never saw the forget set: fine-tuning on code lowers the perplexity of any code, quantization
raises it. So the attacked unlearned model ``U_att`` is compared with the *same* attack on the
model before unlearning (``B_att``, which knows the forget set) and on the exact-retrain model
(``R_att``, which never saw it). For a metric ``m`` (forget log-perplexity, a membership-inference
AUC, a memorisation score of the forget set)::

    recovered fraction = (m(U_att) - m(R_att)) / (m(B_att) - m(R_att))

0: the attacked unlearned model behaves like a model that never saw the data; 1: the attack
brought it all back (like the original). It is not clipped: below 0 the unlearned model is further
from the original than the exact retrain is (over-unlearned), above 1 closer than the original.
When ``B_att`` and ``R_att`` cannot be told apart the scale has no length and the fraction is
meaningless (the attack wrecked both, or the metric never separated them): it is then reported as
"n/a" (``None``), with the two ends' own values beside it. Without an exact-retrain model there is
no scale: report the raw change ``m(U_att) - m(U)`` (:func:`raw_change`).

The rule for "n/a" (:func:`recovered_fraction`): the ``confidence`` (95%) percentile-bootstrap
interval of the difference ``m(B_att) - m(R_att)`` contains 0. The interval
(:func:`ends_interval`) is *paired*: both ends were scored on the same documents, so each resample
draws forget documents (and, for an AUC, approximate documents) with replacement and recomputes the
metric of both models on that one resample. Without an interval only an exact tie is "n/a".

Scoring the rest of the forget set: after relearning on a slice of the forget set, only the other
documents may be scored. :func:`rescore` recomputes the forget perplexity, every MIA AUC and the
per-document means (memorisation) from a measurement's per-document values
(:attr:`lightning_unlearn.workflow.Measurement.documents`) without the excluded documents, exactly:
the split's perplexity is token-weighted, so it needs each document's number of target tokens
(:func:`document_target_counts`, from the data alone).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..evaluation.mia import roc_auc
from ..evaluation.statistics import mann_whitney_auc

__all__ = [
    "FRACTION_METRICS",
    "document_target_counts",
    "ends_interval",
    "forget_log_ppl",
    "format_recovered",
    "raw_change",
    "recovered_fraction",
    "rescore",
    "restrict_documents",
]

#: metrics a recovered fraction is computed for (where measured): forget log-perplexity (mean NLL
#: per token, the library's ``forget/nll``), the four membership-inference AUCs (forget vs
#: approximate) and the forward-pass memorisation scores of the forget set
FRACTION_METRICS = (
    "forget/nll",
    "mia/loss_auc",
    "mia/zlib_auc",
    "mia/min_k_auc",
    "mia/min_k_plus_plus_auc",
    "memorisation/forget_exact",
    "memorisation/forget_extraction",
)


def _number(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


# ----------------------------------------------------------------------------------- the formula
def recovered_fraction(
    attacked_unlearned: float | None,
    attacked_before: float | None,
    attacked_retrain: float | None,
    *,
    ends_interval: tuple[float, float] | None = None,
) -> float | None:
    """``(m(U_att) - m(R_att)) / (m(B_att) - m(R_att))``, or ``None`` ("n/a").

    Args:
        attacked_unlearned: ``m(U_att)``, the attacked unlearned model's value.
        attacked_before: ``m(B_att)``, the same attack on the model before unlearning.
        attacked_retrain: ``m(R_att)``, the same attack on the exact-retrain model.
        ends_interval: the bootstrap confidence interval ``(low, high)`` of
            ``m(B_att) - m(R_att)`` (:func:`ends_interval`). ``None``: no interval, only an exact
            tie of the ends is "n/a".

    Returns:
        The fraction (not clipped: <0 or >1 are possible and meaningful), or ``None`` when

        * a value is missing or not finite,
        * ``ends_interval`` contains 0 (``low <= 0 <= high``) or has a NaN end: the ends cannot
          be told apart after the attack,
        * ``m(B_att) == m(R_att)``.
    """
    u, b, r = (_number(v) for v in (attacked_unlearned, attacked_before, attacked_retrain))
    if u is None or b is None or r is None or b == r:
        return None
    if ends_interval is not None:
        low, high = (float(x) for x in ends_interval)
        if math.isnan(low) or math.isnan(high) or low <= 0.0 <= high:
            return None
    return (u - r) / (b - r)


def raw_change(before: float | None, after: float | None) -> float:
    """``after - before`` (e.g. ``m(U_att) - m(U)``: what to report without an exact-retrain
    model); NaN when either is missing or not finite."""
    b, a = _number(before), _number(after)
    return math.nan if a is None or b is None else a - b


def forget_log_ppl(values: Mapping[str, Any]) -> float | None:
    """Forget log-perplexity (mean NLL per target token, nats) of a measurement's flat values:
    ``forget/nll``, else ``log(forget/ppl)``; ``None`` when neither is there and finite."""
    nll = _number(values.get("forget/nll"))
    if nll is not None:
        return nll
    ppl = _number(values.get("forget/ppl"))
    return math.log(ppl) if ppl is not None and ppl > 0 else None


def format_recovered(
    fraction: float | None, before: float | None, retrain: float | None, *, digits: int = 2
) -> str:
    """A table cell: ``"0.42 (B 1.97, R 2.55)"``, or ``"n/a (B 2.40, R 2.45)"``."""

    def show(v: float | None) -> str:
        return "—" if _number(v) is None else f"{v:.{digits}f}"

    head = "n/a" if fraction is None else f"{fraction:.{digits}f}"
    return f"{head} (B {show(before)}, R {show(retrain)})"


# ----------------------------------------------------------------------------------- the documents
def document_target_counts(datamodule: Any, split: str = "forget") -> dict[int, int]:
    """Target tokens per document of an evaluation split, ``{doc_index: count}``, from the data
    alone: the windows ``datamodule.eval_loaders([split])`` scores (``eval_subset`` included),
    counting the labels that are not ``-100`` after the next-token shift, summed over a document's
    windows, exactly as the evaluator counts them. Documents without targets are left out (the
    evaluator leaves them out too)."""
    loaders = datamodule.eval_loaders([split])
    loader = loaders.iterables[split] if hasattr(loaders, "iterables") else loaders
    counts: dict[int, int] = {}
    for batch in loader:
        targets = (batch["labels"][:, 1:] != -100).sum(dim=1).tolist()
        for doc, n in zip(batch["doc_index"].tolist(), targets):
            if n:
                counts[int(doc)] = counts.get(int(doc), 0) + int(n)
    return counts


def restrict_documents(
    documents: Mapping[str, Mapping[str, Sequence]],
    exclude: Iterable[int],
    *,
    split: str = "forget",
) -> dict[str, dict[str, list]]:
    """A copy of per-document values (``Measurement.documents``: ``{split: {"doc_index": [...],
    column: [...]}}``) without the documents of ``split`` whose ``doc_index`` is in ``exclude``;
    other splits are copied unchanged."""
    drop = {int(d) for d in exclude}
    out: dict[str, dict[str, list]] = {}
    for name, columns in documents.items():
        columns = {k: list(v) for k, v in columns.items()}
        if name == split and drop:
            keep = [i for i, d in enumerate(columns["doc_index"]) if int(d) not in drop]
            columns = {k: [v[i] for i in keep] for k, v in columns.items()}
        out[name] = columns
    return out


def _log_ppl(columns: Mapping[str, Sequence]) -> np.ndarray:
    if "ppl" not in columns:
        raise KeyError(
            "per-document perplexities ('ppl') are missing from the measurement's documents: "
            "score with the Perplexity metric"
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(np.asarray(columns["ppl"], dtype=float))


def _tokens(doc_index: Sequence[int], tokens: Mapping[int, int]) -> np.ndarray:
    missing = [int(d) for d in doc_index if int(d) not in tokens]
    if missing:
        raise KeyError(
            f"no target-token count for forget documents {missing[:10]}: take the counts from "
            "the data module that was scored (document_target_counts)"
        )
    return np.asarray([tokens[int(d)] for d in doc_index], dtype=float)


def _is_score(column: str) -> bool:
    """A membership-inference score column (``mia/loss``, ``mia_grad/gradient_norm``...)."""
    return "/" in column and column.split("/", 1)[0].startswith("mia")


def _mean_key(column: str, members: str) -> str:
    """``memorisation/exact`` -> ``memorisation/forget_exact`` (the per-split mean's name)."""
    prefix, name = column.split("/", 1)
    return f"{prefix}/{members}_{name}"


def _finite_mean(values: Sequence[float]) -> float:
    finite = [float(v) for v in values if _number(v) is not None]
    return sum(finite) / len(finite) if finite else math.nan


def rescore(
    documents: Mapping[str, Mapping[str, Sequence]],
    tokens: Mapping[int, int],
    *,
    exclude: Iterable[int] = (),
    members: str = "forget",
    non_members: str = "approximate",
) -> dict[str, float]:
    """The member split's metrics of a measurement, without the excluded documents.

    From the per-document values of a measurement (``Measurement.documents``) only, so no forward
    pass:

    * ``{members}/nll``: the token-weighted mean of the documents' log-perplexities
      (``sum_d tokens_d * log ppl_d / sum_d tokens_d``, the library's split NLL) and
      ``{members}/ppl``, its exponential;
    * ``<mia prefix>/<score>_auc`` for every membership-inference score column (``mia/loss``,
      ``mia/zlib``, ``mia_grad/gradient_norm``...) present on both sides
      (:func:`~lightning_unlearn.evaluation.mia.roc_auc`, members positive);
    * ``<prefix>/{members}_<name>`` for every other per-document column ``<prefix>/<name>`` of
      the member split (``memorisation/exact`` -> ``memorisation/forget_exact``): the mean of
      its finite values, the convention of the memorisation metrics;
    * ``{members}/documents``: how many documents were scored.

    With nothing excluded these equal the measurement's own values (up to float rounding).
    Values that need more than per-document values (accuracy, TPR at low FPR, AUC intervals,
    PrivLeak) are not recomputed.

    Args:
        documents: per-document values by split (``doc_index``, ``ppl``, ``mia/loss``...).
        tokens: target tokens per member document (:func:`document_target_counts`).
        exclude: member ``doc_index`` values left out (the relearned slice).
        members / non_members: the member split (scored, restricted) and the non-member split.
    """
    kept = restrict_documents(documents, exclude, split=members)
    forget = kept[members]
    log_ppl = _log_ppl(forget)
    weights = _tokens(forget["doc_index"], tokens)
    out: dict[str, float] = {f"{members}/documents": float(len(forget["doc_index"]))}
    if weights.sum() > 0:
        nll = float((weights * log_ppl).sum() / weights.sum())
        out[f"{members}/nll"] = nll
        out[f"{members}/ppl"] = math.inf if nll > 700 else math.exp(nll)  # NaN stays NaN
    else:
        out[f"{members}/nll"] = out[f"{members}/ppl"] = math.nan
    others = kept.get(non_members, {})
    for column, values in forget.items():
        if column in ("doc_index", "ppl") or "/" not in column:
            continue
        if _is_score(column):
            if column in others:
                # None (a non-finite value stored as JSON null) becomes NaN; roc_auc drops it
                pos = torch.from_numpy(np.asarray(values, dtype=float))
                neg = torch.from_numpy(np.asarray(others[column], dtype=float))
                out[f"{column}_auc"] = roc_auc(pos, neg)
        else:
            out[_mean_key(column, members)] = _finite_mean(values)
    return out


# ----------------------------------------------------------------------------------- the interval
def _aligned(before: Mapping, retrain: Mapping, split: str) -> None:
    a, b = list(before[split]["doc_index"]), list(retrain[split]["doc_index"])
    if a != b:
        raise ValueError(
            f"the two ends were scored on different {split} documents ({len(a)} vs {len(b)}); "
            "score both on the same data module"
        )


def _column_of(metric: str, members: str) -> tuple[str, str]:
    """``(kind, column)`` of a metric name: ``("nll", "ppl")``, ``("auc", "mia/loss")`` or
    ``("mean", "memorisation/exact")``."""
    if metric == f"{members}/nll":
        return "nll", "ppl"
    if metric.endswith("_auc") and _is_score(metric):
        return "auc", metric.removesuffix("_auc")
    prefix, _, name = metric.partition("/")
    if name.startswith(f"{members}_"):
        return "mean", f"{prefix}/{name.removeprefix(members + '_')}"
    raise ValueError(
        f"no bootstrap for metric {metric!r}: use {members}/nll, <mia prefix>/<score>_auc or a "
        f"per-document mean <prefix>/{members}_<name>"
    )


def ends_interval(
    before_documents: Mapping[str, Mapping[str, Sequence]],
    retrain_documents: Mapping[str, Mapping[str, Sequence]],
    metric: str,
    tokens: Mapping[int, int] | None = None,
    *,
    exclude: Iterable[int] = (),
    members: str = "forget",
    non_members: str = "approximate",
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Paired percentile-bootstrap interval of ``m(B_att) - m(R_att)`` over documents.

    Both ends must have been scored on the same documents (same ``doc_index`` order). Each resample
    draws the kept member documents with replacement (and, for an AUC, the non-member documents,
    independently), computes the metric of *both* models on that resample, and keeps the
    difference; the interval is the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``
    quantiles of the differences (Efron & Tibshirani 1993, ch. 13).

    Args:
        before_documents / retrain_documents: per-document values of ``B_att`` and ``R_att``
            (``Measurement.documents``).
        metric: ``"forget/nll"`` (needs ``tokens``), an AUC ``"<mia prefix>/<score>_auc"``, or a
            per-document mean ``"<prefix>/forget_<name>"`` (``memorisation/forget_exact``), as
            :func:`rescore` names them.
        tokens: target tokens per member document (:func:`document_target_counts`).
        exclude: member documents left out (the relearned slice), as in :func:`rescore`.
        n_resamples / confidence / seed: bootstrap settings.

    Returns:
        ``(low, high)``; ``(nan, nan)`` when a value needed is missing or not finite.

    Raises:
        ValueError: an unknown metric name, bad bootstrap settings, or ends scored on different
            documents.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    kind, column = _column_of(metric, members)
    before, retrain = (
        restrict_documents(d, exclude, split=members) for d in (before_documents, retrain_documents)
    )
    _aligned(before, retrain, members)
    n_pos = len(before[members]["doc_index"])
    if n_pos == 0 or column not in before[members] or column not in retrain[members]:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, n_pos, size=(n_resamples, n_pos))
    if kind == "nll":
        if tokens is None:
            raise ValueError(f"the interval of {metric} needs the documents' target-token counts")
        t = _tokens(before[members]["doc_index"], tokens)
        gap = _log_ppl(before[members]) - _log_ppl(retrain[members])
        if not np.isfinite(gap).all():
            return math.nan, math.nan
        diffs = (t[pick] * gap[pick]).sum(axis=1) / t[pick].sum(axis=1)
    elif kind == "mean":
        gap = np.asarray(before[members][column], float) - np.asarray(
            retrain[members][column], float
        )
        if not np.isfinite(gap).all():
            return math.nan, math.nan
        diffs = gap[pick].mean(axis=1)
    else:
        if non_members not in before or column not in before[non_members]:
            return math.nan, math.nan
        _aligned(before, retrain, non_members)
        b_pos, r_pos = (np.asarray(e[members][column], float) for e in (before, retrain))
        b_neg, r_neg = (np.asarray(e[non_members][column], float) for e in (before, retrain))
        if b_neg.size == 0 or not all(np.isfinite(x).all() for x in (b_pos, r_pos, b_neg, r_neg)):
            return math.nan, math.nan
        pick_neg = rng.integers(0, b_neg.size, size=(n_resamples, b_neg.size))
        diffs = mann_whitney_auc(b_pos[pick], b_neg[pick_neg]) - mann_whitney_auc(
            r_pos[pick], r_neg[pick_neg]
        )
    low, high = np.quantile(diffs, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)
