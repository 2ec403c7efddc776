"""The robustness benchmark's numbers from the stored scores alone (what ``robustness.py
--render-only`` recomputes): the two ends' values and bootstrap intervals per attack variant,
each method's recovered fractions, the answers and the comparison with the quality benchmark."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import common

#: the two ends of the scale: the model before unlearning and the exact-retrain model
ENDS = {"B": "before unlearning (B)", "R": "exact retrain (R)"}
#: the unattacked model scored on the rest of the forget set (the forget-slice attack's base)
SLICE_BASE = "relearn_forget_slice_k0"


def variant_order(results: dict) -> list[str]:
    names = ["none"]
    for data in results["options"]["relearn_data"]:
        if data == "forget_slice":
            names.append(SLICE_BASE)
        names += [f"relearn_{data}_k{k}" for k in results["options"]["relearn_steps"]]
    names += [f"quantize_{b}bit" for b in results["options"]["bits"]]
    return names


def _base_of(variant: str) -> str:
    return SLICE_BASE if variant.startswith("relearn_forget_slice") else "none"


_INTERVALS: dict[str, tuple[float, float]] = {}


def analyse(results: dict) -> dict:
    """Recovered fractions per method, variant and metric, the ends' values and intervals, and the
    numbers behind the answer."""
    from lightning_unlearn.attacks import FRACTION_METRICS, ends_interval, raw_change
    from lightning_unlearn.attacks import recovered_fraction as fraction_of

    opts = results["options"]
    tokens = {int(k): int(v) for k, v in results["forget_tokens"].items()}
    models = results["models"]
    b_variants = models.get("B", {}).get("variants", {})
    r_variants = models.get("R", {}).get("variants", {})
    order = variant_order(results)
    ends: dict[str, dict[str, Any]] = {}
    for variant in order:
        b, r = b_variants.get(variant), r_variants.get(variant)
        if b is None or r is None:
            continue
        ends[variant] = {}
        for metric in FRACTION_METRICS:
            if b["scored"].get(metric) is None and r["scored"].get(metric) is None:
                continue
            key = json.dumps(
                [
                    variant,
                    metric,
                    b["scored"].get(metric),
                    r["scored"].get(metric),
                    b["excluded"],
                    opts["resamples"],
                    opts["confidence"],
                ]
            )
            if key not in _INTERVALS:  # the bootstrap runs once per variant and metric
                _INTERVALS[key] = ends_interval(
                    b["documents"],
                    r["documents"],
                    metric,
                    tokens,
                    exclude=set(b["excluded"]),
                    n_resamples=opts["resamples"],
                    confidence=opts["confidence"],
                    seed=0,
                )
            low, high = _INTERVALS[key]
            ends[variant][metric] = {
                "before": b["scored"].get(metric),
                "retrain": r["scored"].get(metric),
                "interval": [common.finite(low), common.finite(high)],
            }
    fractions: dict[str, dict[str, dict[str, Any]]] = {}
    for method in results["methods"]:
        if method not in models:
            continue
        variants = models[method].get("variants", {})
        fractions[method] = {}
        for variant, rec in variants.items():
            if variant not in ends:
                continue
            row = {}
            base = variants.get(_base_of(variant), {}).get("scored", {})
            for metric, end in ends[variant].items():
                u = rec["scored"].get(metric)
                low, high = end["interval"]
                interval = None if low is None or high is None else (low, high)
                f = fraction_of(
                    u,
                    end["before"],
                    end["retrain"],
                    ends_interval=interval if interval else (math.nan, math.nan),
                )
                row[metric] = {
                    "fraction": f,
                    "unlearned": u,
                    "raw_change": common.finite(raw_change(base.get(metric), u)),
                }
            fractions[method][variant] = row
    return {"ends": ends, "fractions": fractions, "answers": answers(results, ends, fractions)}


def mean_of(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def answers(results: dict, ends: dict, fractions: dict) -> dict:
    """Which method's forgetting lasts (mean recovered fraction of forget log-perplexity over the
    attacked variants where the ends differ), the strongest attack, and the comparison with the
    quality benchmark's ranking and the paper's finding."""
    attacked = [v for v in variant_order(results) if v not in ("none", SLICE_BASE)]
    by_method = {}
    for method, rows in fractions.items():
        values = {v: rows.get(v, {}).get("forget/nll", {}).get("fraction") for v in attacked}
        got = {v: f for v, f in values.items() if f is not None}
        worst = max(got, key=got.get) if got else None
        by_method[method] = {
            "mean": mean_of(list(got.values())),
            "worst": got.get(worst) if worst else None,
            "worst_variant": worst,
            "scored_variants": len(got),
            "na_variants": sum(1 for v in attacked if v in rows and values[v] is None),
            "at_stop": rows.get("none", {}).get("forget/nll", {}).get("fraction"),
            "mean_auc": mean_of(
                [rows.get(v, {}).get("mia/loss_auc", {}).get("fraction") for v in attacked]
            ),
        }
    ranked = sorted(
        (m for m in by_method if by_method[m]["mean"] is not None),
        key=lambda m: by_method[m]["mean"],
    )
    by_variant = {
        v: mean_of(
            [fractions[m].get(v, {}).get("forget/nll", {}).get("fraction") for m in fractions]
        )
        for v in attacked
    }
    scored_variants = {v: f for v, f in by_variant.items() if f is not None}
    strongest = max(scored_variants, key=scored_variants.get) if scored_variants else None
    quality = results.get("quality_rankings") or {}
    compared = {}
    for kind in ("robustness", "tradeoff"):  # the quality benchmark's (a) and (c) rankings
        theirs = [m for m in quality.get(kind, []) if m in ranked]
        ours = [m for m in ranked if m in theirs]
        if len(theirs) >= 2:
            compared[kind] = {"quality": theirs, "here": ours, "same_order": ours == theirs}
    return {
        "by_method": by_method,
        "ranking": ranked,
        "by_variant": by_variant,
        "strongest_attack": strongest,
        "na_ends": sorted(
            v
            for v, e in ends.items()
            if e.get("forget/nll", {}).get("interval")
            and _contains_zero(e["forget/nll"]["interval"])
        ),
        "compared_with_quality": compared,
    }


def _contains_zero(interval) -> bool:
    low, high = interval
    return low is None or high is None or low <= 0.0 <= high


def quality_rankings(path: Path) -> dict[str, list[str]]:
    """The quality benchmark's rankings (``docs/results.json``), if it has been run."""
    try:
        data = json.loads(path.read_text())
        a = data["answers"]
        return {
            "tradeoff": list(a["c_tradeoff"]["ranking"]),
            "robustness": list(a["a_robustness"]["ranking"]),
            "source": str(path),
        }
    except (OSError, KeyError, TypeError, ValueError):
        return {}
