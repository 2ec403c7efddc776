"""The forgetting-quality benchmark's numbers from the stored per-model scores alone (what
``forgetting_quality.py --render-only`` recomputes): each row's F, points and score, the
permutation null and the calibration verdict."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: epsilon's threshold search: the competition's ``metric.py`` (default) or every interval
SEARCHES = {
    "reference": {"thresholds": "grid", "window": 2.0},
    "every-interval": {"thresholds": "exact", "window": None},
}
DEFAULT_SEARCH = "reference"
#: the reference's peaky-population ratio (``forgetting_quality._PEAKY_RATIO``)
PEAKY_RATIO = 0.01


# ----------------------------------------------------------------------------------- analysis
def confidences(models: list[dict]) -> np.ndarray:
    return np.array([m["confidence"] for m in models], dtype=np.float64)


def mean_of(models: list[dict], key: str) -> float | None:
    values = [m[key] for m in models if m.get(key) is not None]
    return float(np.mean(values)) if values else None


def bucket_labels(n: int) -> list[float]:
    """The points an example can earn with ``n`` models per population (largest first)."""
    bound = math.ceil(math.log(n - 1)) if n > 2 else 0
    return [0.5**k for k in range(2 * bound)] + [0.0]


def compare(
    unlearned: list[dict],
    retrained: list[dict],
    *,
    search: str,
    timed: list[dict],
    utility: list[dict] | None = None,
) -> dict:
    """F, epsilon and points per example, utility ratios, score and seconds of one row.

    ``timed``: the retrain models whose seconds per model are the retrain side's (every retrain
    model's time measures the same recipe, whichever seeds the row compares); ``utility``: the
    retrain models whose utilities are the denominators (default ``retrained``; a row measured on
    the held-out retain documents takes the retrain models scored on them)."""
    from lightning_unlearn.evaluation.forgetting_quality import (
        competition_score,
        epsilon_per_example,
        points,
    )

    n = min(len(unlearned), len(retrained))
    u, r = unlearned[:n], retrained[:n]
    eps = epsilon_per_example(confidences(u), confidences(r), **SEARCHES[search])
    # the reference's peaky rule (epsilon = cap when one spread is < 1% of the other's)
    spread_u, spread_r = np.ptp(confidences(u), axis=0), np.ptp(confidences(r), axis=0)
    peaky = np.minimum(spread_u, spread_r) < PEAKY_RATIO * np.maximum(spread_u, spread_r)
    pts = points(eps, n)
    other = other_search(search)
    eps_other = epsilon_per_example(confidences(u), confidences(r), **SEARCHES[other])
    f = float(pts.mean())
    base = (utility or retrained)[:n]
    utilities = {k: (mean_of(u, k), mean_of(base, k)) for k in ("retain_acc", "general_acc")}
    ratios = {k: (a / b if a is not None and b else None) for k, (a, b) in utilities.items()}
    score = None
    if all(a is not None and b for a, b in utilities.values()):
        score = competition_score(
            f,
            retain_utility_unlearned=utilities["retain_acc"][0],
            retain_utility_retrained=utilities["retain_acc"][1],
            test_utility_unlearned=utilities["general_acc"][0],
            test_utility_retrained=utilities["general_acc"][1],
        )
    timing = same_host_seconds(u, timed)
    seconds_u, seconds_r = timing["unlearned"], timing["retrained"]
    return {
        "n": n,
        "F": f,
        "search": search,
        "F_other": float(points(eps_other, n).mean()),
        "other_search": other,
        "epsilon": eps.tolist(),
        "points": pts.tolist(),
        "points_histogram": {f"{b:g}": int(np.sum(pts == b)) for b in bucket_labels(n)},
        "peaky_examples": int(peaky.sum()),
        "retain_acc": utilities["retain_acc"],
        "general_acc": utilities["general_acc"],
        "retain_ratio": ratios["retain_acc"],
        "general_ratio": ratios["general_acc"],
        "score": score,
        "seconds_unlearned": seconds_u,
        "seconds_retrained": seconds_r,
        "time_ratio": seconds_u / seconds_r if seconds_u is not None and seconds_r else None,
        "timed_models": timing["models"],
        "timed_host": timing["host"],
    }


def same_host_seconds(unlearned: list[dict], retrained: list[dict]) -> dict[str, Any]:
    """Mean seconds per model of each side, from the models trained on one machine only.

    A resumed run may continue on another machine (two sessions' machines here differed by ~3x in
    speed); a time ratio across machines would measure the machines. The machine is the one that
    trained most of the unlearned side (models recorded before machines were recorded count as
    one unknown machine, ``None``); the retrain side is timed on that machine too, or not at all.
    """
    hosts = [m.get("host") for m in unlearned]
    host = max(dict.fromkeys(hosts), key=hosts.count) if hosts else None
    u = [m for m in unlearned if m.get("host") == host]
    r = [m for m in retrained if m.get("host") == host]
    return {
        "host": host,
        "models": [len(u), len(r)],
        "unlearned": mean_of(u, "seconds"),
        "retrained": mean_of(r, "seconds"),
    }


def other_search(search: str) -> str:
    return next(k for k in SEARCHES if k != search)


def null_distribution(retrain: list[dict], n: int, *, draws: int, search: str) -> dict:
    """F of two halves of the 2n retrain models drawn at random: indistinguishable by
    construction, so its spread is what F means at this n."""
    from lightning_unlearn.evaluation.forgetting_quality import forgetting_quality

    pool = confidences(retrain[: 2 * n])
    rng = np.random.default_rng(0)
    values = []
    for _ in range(draws):
        order = rng.permutation(2 * n)
        values.append(forgetting_quality(pool[order[:n]], pool[order[n:]], **SEARCHES[search]))
    p5, p50, p95 = np.percentile(values, [5, 50, 95])
    percentiles = {"p5": float(p5), "median": float(p50), "p95": float(p95)}
    return {"n": n, "draws": draws, **percentiles, "mean": float(np.mean(values))}


def analyse(results: dict[str, Any], labels: dict[str, str]) -> None:
    """Rows, the permutation null and the calibration verdict from the stored scores
    (``labels``: each method's name in the tables)."""
    n, search = results["options"]["n"], results["options"]["search"]
    models = results["models"]
    retrain = sorted(models.get("retrain", []), key=lambda m: m["seed"])
    first = [m for m in retrain if m["seed"] <= n]
    second = [m for m in retrain if n < m["seed"] <= 2 * n]
    rows = []

    held = sorted(models.get("retrain_heldout", []), key=lambda m: m["seed"])
    # the held-out population is the same recipe retrained (seeds 1..N again), on the machine of
    # the rows that needed it: its seconds time the retrain side there too
    timed = retrain + held

    def add(kind, key, label, unlearned, retrained, planned):
        if min(len(unlearned), len(retrained)) >= 2:
            heldout = any(m.get("retain_split") == "heldout" for m in unlearned)
            if heldout and len(held) < min(len(unlearned), len(retrained)):
                return  # its utilities need the retrain models scored on the held-out half
            utility = held if heldout else None
            row = compare(unlearned, retrained, search=search, timed=timed, utility=utility)
            row.update({"retain_split": "heldout"} if heldout else {})
            rows.append({"kind": kind, "key": key, "label": label, "planned": planned, **row})

    indistinguishable = f"retrain seeds {n + 1}–{2 * n} vs retrain 1–{n} (indistinguishable)"
    add("calibration", "retrain", indistinguishable, second, first, n)
    seen = sorted(models.get("seen", []), key=lambda m: m["seed"])
    never = f"seen seeds 1–{n} vs retrain 1–{n} (never unlearned)"
    add("calibration", "seen", never, seen, first, n)
    for key in results["options"]["methods"]:
        runs = sorted(models.get(key, []), key=lambda m: m["seed"])
        add("method", key, labels[key], runs, first, n)
    results["rows"] = rows
    k = min(len(first), len(second))
    draws = results["options"]["null_draws"]
    # the null reads only the retrain models: computed again only when they (or the search) change
    # (the reference's grid search costs ~1 min for 200 draws here, after every model otherwise)
    key = {"seeds": [m["seed"] for m in first + second], "n": k, "draws": draws, "search": search}
    previous = results.get("null")
    if previous is not None and previous.get("key") == key:
        pass
    elif k >= 2 and draws > 0:
        null = null_distribution(first + second, k, draws=draws, search=search)
        results["null"] = {**null, "key": key}
    else:
        results["null"] = None
    results["verdict"] = verdict(results)


def verdict(results: dict[str, Any]) -> dict[str, Any]:
    """Do the calibration rows separate, and where does each method fall?"""
    rows = {r["key"]: r for r in results["rows"]}
    null, seen = results.get("null"), rows.get("seen")
    if null is None or seen is None:
        return {"complete": False, "separated": None, "methods": {}}
    separated = seen["F"] < null["p5"]
    methods = {}
    for r in results["rows"]:
        if r["kind"] != "method" or not separated:
            continue
        if r["F"] >= null["p5"]:
            methods[r["key"]] = "indistinguishable from retrain at this N"
        elif r["F"] <= seen["F"]:
            methods[r["key"]] = "no better than never unlearned"
        else:
            methods[r["key"]] = "between never unlearned and retrain"
    if separated:
        reason = None
    elif null["p5"] <= 0.0:
        reason = "small_n"  # even indistinguishable halves score 0 in 5% of the draws
    else:
        reason = "noise"  # the seeds move the confidences as much as the forget set does
    return {
        "complete": True,
        "separated": bool(separated),
        "reason": reason,
        "peaky": {r["key"]: r["peaky_examples"] for r in results["rows"] if r["peaky_examples"]},
        "gap": null["median"] - seen["F"],
        "noise": null["p95"] - null["p5"],
        "methods": methods,
    }
