"""Perplexity and next-token accuracy per split: the quantity the approximate-retrain stop reads.

Perplexity is ``exp(sum NLL / number of target tokens)`` over the whole split (not a mean of
per-document perplexities), so it does not depend on batching or on the number of processes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from .base import MetricResult, TokenMetric
from .documents import SplitDocuments

__all__ = ["Perplexity", "split_perplexity"]


def split_perplexity(logprob: list[torch.Tensor], correct: list[torch.Tensor]) -> dict[str, float]:
    """``{"ppl", "nll", "acc"}`` of a split from its documents' token log-probabilities and argmax
    hits; NaN for a split without tokens."""
    tokens = sum(t.numel() for t in logprob)
    if tokens == 0:
        return {"ppl": math.nan, "nll": math.nan, "acc": math.nan}
    nll = -sum(float(t.double().sum()) for t in logprob) / tokens
    acc = sum(int(c.sum()) for c in correct) / tokens
    return {"ppl": math.exp(nll), "nll": nll, "acc": acc}


class Perplexity(TokenMetric):
    """Perplexity (``{split}/ppl``), mean NLL per token (``{split}/nll``) and next-token accuracy
    (``{split}/acc``) of every evaluated split; per document, its perplexity.

    Args:
        tolerance: the verdict passes when the unlearned forget perplexity is within this
            fraction of the approximate-retrain target.
        still_remembered: how many forget documents ``report.md`` lists as the ones the
            unlearned model still gives back best (its lowest perplexities).
    """

    def __init__(self, *, tolerance: float = 0.1, still_remembered: int = 5) -> None:
        self.tolerance = float(tolerance)
        self.still_remembered = int(still_remembered)

    def compute(self, documents: Mapping[str, SplitDocuments]) -> MetricResult:
        result = MetricResult()
        for split, docs in documents.items():
            for key, value in split_perplexity(docs.logprob, docs.correct).items():
                result.values[f"{split}/{key}"] = value
            result.documents[split] = {
                "ppl": [math.exp(-float(t.double().mean())) for t in docs.logprob],
                "tokens": [float(t.numel()) for t in docs.logprob],
            }
        return result

    def owns(self, key: str) -> bool:
        return key.count("/") == 1 and key.split("/")[1] in ("ppl", "nll", "acc")

    def label(self, key: str) -> str | None:
        split, _, quantity = key.partition("/")
        return f"{split} ppl" if quantity == "ppl" else None  # nll, acc: in report.json

    def change(self, before: float | None, after: float | None) -> str:
        if before is None or after is None or before == 0:
            return "—"
        return f"{100.0 * (after - before) / before:+.1f}%"

    def verdict(self, report: Mapping[str, Any]) -> list[str]:
        lines = []
        target = report.get("target_ppl")
        after, before = report.get("after") or {}, report.get("before") or {}
        forget = after.get("forget/ppl")
        if forget is not None and target:
            gap = (forget - target) / target
            ok = abs(gap) <= self.tolerance
            lines.append(
                f"{'PASS' if ok else 'FAIL'}: forget ppl {forget:.3f} is {gap * 100:+.1f}% from the "
                f"target {target:.3f} (within ±{self.tolerance * 100:g}%: {'yes' if ok else 'no'})"
            )
        for split in ("retain", "general"):
            b, a = before.get(f"{split}/ppl"), after.get(f"{split}/ppl")
            if b is not None and a is not None:
                lines.append(f"utility: {split} ppl {b:.3f} -> {a:.3f} ({self.change(b, a)})")
        return lines

    def sections(self, report: Mapping[str, Any]) -> list[dict[str, str]]:
        """The forget documents with the lowest perplexity after unlearning, against the unseen
        approximate split's median (what "forgotten" should look like)."""
        docs = report.get("documents") or {}
        after = (docs.get("after") or {}).get("forget") or {}
        before = (docs.get("before") or {}).get("forget") or {}
        if not after.get("ppl") or self.still_remembered < 1:
            return []
        unseen = _median(((docs.get("after") or {}).get("approximate") or {}).get("ppl", []))
        order = sorted(range(len(after["ppl"])), key=lambda i: after["ppl"][i])
        rows = [
            "| document | ppl before | ppl after | after / unseen median |",
            "|---|---:|---:|---:|",
        ]
        for i in order[: self.still_remembered]:
            b = before.get("ppl", [None] * (i + 1))[i] if before.get("ppl") else None
            a = after["ppl"][i]
            ratio = f"{a / unseen:.2f}" if unseen else "—"
            rows.append(
                f"| {after['doc_index'][i]} | {'—' if b is None else f'{b:.3f}'} | {a:.3f} | {ratio} |"
            )
        intro = (
            f"The {min(self.still_remembered, len(order))} forget documents the unlearned model still "
            "gives back best (lowest perplexity after unlearning)"
            + (
                f"; the unseen approximate documents' median perplexity after is {unseen:.3f}"
                if unseen
                else ""
            )
            + ". A ratio well below 1 marks a document that is still remembered."
        )
        return [
            {
                "title": "Forget documents still given back best",
                "markdown": intro + "\n\n" + "\n".join(rows),
            }
        ]


def _median(values: list[float]) -> float | None:
    ordered = sorted(v for v in values if v is not None and math.isfinite(v))
    if not ordered:
        return None
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])
