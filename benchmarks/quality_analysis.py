"""The quality benchmark's numbers from the stored scores alone (what ``quality.py --render-only``
recomputes): reached-target flags, distances to the exact-retrain model, utility costs, the
answers to questions (a)-(c) and the time-to-forget rows."""

from __future__ import annotations

import math
import statistics
from typing import Any

import common

SPLITS = ("forget", "approximate", "retain", "general")
DIST_SPLITS = ("forget", "approximate", "retain")
MIA = ("loss", "zlib", "min_k", "min_k_plus_plus")
#: the methods whose one-epoch run (the paper's fixed schedule) is timed against retraining
TTF_METHODS = ("GA", "GA+GD in-dist")


def flat(metrics: dict[str, float]) -> dict[str, Any]:
    """Keep what this benchmark's tables need: per-split perplexity and MIA AUCs (None when
    absent), from a workflow measurement's flat values."""
    return {
        "ppl": {s: common.finite(metrics.get(f"{s}/ppl")) for s in SPLITS},
        "mia_auc": {m: common.finite(metrics.get(f"mia/{m}_auc")) for m in MIA},
    }


def _reached(ppl: float | None, target: float) -> bool:
    return ppl is None or ppl >= target  # None: diverged (inf / NaN) far past the target


def _log_ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or a <= 0 or b <= 0:
        return None
    return math.log(a / b)


def distance(record: dict[str, Any], exact: dict[str, Any]) -> dict[str, Any]:
    """Relative perplexity differences to the exact-retrain model and their mean |log ratio|."""
    rel, logs = {}, []
    for s in DIST_SPLITS:
        r = _log_ratio(record["ppl"][s], exact["ppl"][s])
        rel[s] = None if r is None else math.exp(r) - 1.0
        logs.append(math.inf if r is None else abs(r))
    return {"relative": rel, "mean_abs_log": sum(logs) / len(logs)}


def utility_cost(
    record: dict[str, Any], seen: dict[str, Any], trained_on: str | None = None
) -> float:
    """Mean log increase of retain and general perplexity over the seen model (0 = no damage),
    leaving out the split the method's retain term trains on (``trained_on``): a method that
    descends on the very documents it is scored on would otherwise look better the more it
    memorises them."""
    splits = [s for s in ("retain", "general") if s != trained_on]
    parts = [_log_ratio(record["ppl"][s], seen["ppl"][s]) for s in splits]
    return math.inf if any(p is None for p in parts) else sum(parts) / len(parts)


def annotate(results: dict[str, Any]) -> None:
    """Add reached-target flags, distances and utility costs to every scored point."""
    exact, seen, target = results["exact_retrain"], results["seen"], results["target_ppl"]
    points = [(seen, None), (exact, None)]
    for run in results["runs"]:
        trained = run.get("retain_data")
        points += [(r, trained) for r in run["records"]]
        if run["stop"]:
            points.append((run["stop"], trained))
    for p, trained in points:
        p["reached_target"] = _reached(p["ppl"]["forget"], target)
        p["distance_to_exact"] = distance(p, exact)
        p["utility_cost"] = utility_cost(p, seen, trained)


def answers(results: dict[str, Any]) -> dict[str, Any]:
    """The numbers behind questions (a)-(c)."""
    runs = results["runs"]
    seen_d = results["seen"]["distance_to_exact"]["mean_abs_log"]
    methods = list(dict.fromkeys(run["method"] for run in runs))
    budgets = results["grid"]["budgets"]
    robust = {}
    for m in methods:
        cells = [
            r for run in runs if run["method"] == m for r in run["records"] if r["step"] in budgets
        ]
        cells += [{"diverged": True}] * sum(
            1
            for run in runs
            if run["method"] == m
            for b in budgets
            if b not in {r["step"] for r in run["records"]}
        )
        dists = [c.get("distance_to_exact", {}).get("mean_abs_log", math.inf) for c in cells]
        costs = [c.get("utility_cost", math.inf) for c in cells]
        reached = [c.get("reached_target", True) for c in cells]
        robust[m] = {
            "cells": len(cells),
            "reached": sum(reached),
            "worst_distance": max(dists),
            "best_distance": min(dists),
            "spread_distance": max(dists) - min(dists),
            "worst_utility_cost": max(costs),
        }
    # robust in the paper's sense: no learning rate or step budget of the grid destroys utility
    order = sorted(
        methods, key=lambda m: (robust[m]["worst_utility_cost"], robust[m]["worst_distance"])
    )
    stops = [(run["method"], run["learning_rate"], run["stop"]) for run in runs if run["stop"]]
    stop_d = [s["distance_to_exact"]["mean_abs_log"] for _, _, s in stops]
    end_d = [
        r["distance_to_exact"]["mean_abs_log"]
        for run in runs
        for r in run["records"]
        if r["step"] == max(budgets)
    ]
    closer = sum(1 for d in stop_d if d < seen_d)
    best = {}
    for m, lr, s in stops:
        if m not in best or s["utility_cost"] < best[m]["utility_cost"]:
            best[m] = {
                "learning_rate": lr,
                "step": s["step"],
                "utility_cost": s["utility_cost"],
                "distance": s["distance_to_exact"]["mean_abs_log"],
                "mia_loss_auc": s["mia_auc"]["loss"],
            }
    tradeoff = sorted(best, key=lambda m: best[m]["utility_cost"])
    return {
        "a_robustness": {
            "by_method": robust,
            "ranking": order,
            "most_robust": order[0] if order else None,
        },
        "b_stop_vs_exact": {
            "seen_distance": seen_d,
            "stops": len(stops),
            "runs": len(runs),
            "stops_closer_than_seen": closer,
            "median_stop_distance": _median(stop_d),
            "median_end_distance": _median(end_d),
        },
        "c_tradeoff": {
            "best_stop_per_method": best,
            "ranking": tradeoff,
            "best": tradeoff[0] if tradeoff else None,
        },
    }


def _median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def time_to_forget(results: dict[str, Any]) -> list[dict[str, Any]]:
    pre = results.get("pretraining") or {}
    rows = []
    for run in results["runs"]:
        has_epoch = any(r["step"] == run.get("epoch_steps") for r in run["records"])
        if not (run.get("epoch_run") or (run["method"] in TTF_METHODS and has_epoch)):
            continue
        epoch = next((r for r in run["records"] if r["step"] == run["epoch_steps"]), None)
        for label, point in (
            ("approximate-retrain stop", run["stop"]),
            ("one epoch (paper)", epoch),
        ):
            if point is None:
                rows.append(
                    {
                        "method": run["method"],
                        "learning_rate": run["learning_rate"],
                        "schedule": label,
                        "reached": False,
                    }
                )
                continue
            row = {
                "method": run["method"],
                "learning_rate": run["learning_rate"],
                "schedule": label,
                "reached": True,
                "step": point["step"],
                "train_seconds": point["train_seconds"],
                "tokens": point["tokens"],
                "ppl": point["ppl"],
                "utility_cost": point["utility_cost"],
                "distance": point["distance_to_exact"]["mean_abs_log"],
            }
            for key in ("pretrain", "pretrain_without_forget"):
                if key in pre:
                    row[f"fraction_of_{key}"] = point["train_seconds"] / pre[key]["seconds"]
            rows.append(row)
    return rows
