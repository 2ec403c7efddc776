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
    """

    def __init__(self, *, tolerance: float = 0.1) -> None:
        self.tolerance = float(tolerance)

    def compute(self, documents: Mapping[str, SplitDocuments]) -> MetricResult:
        result = MetricResult()
        for split, docs in documents.items():
            for key, value in split_perplexity(docs.logprob, docs.correct).items():
                result.values[f"{split}/{key}"] = value
            result.documents[split] = {
                "ppl": [math.exp(-float(t.double().mean())) for t in docs.logprob]
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
