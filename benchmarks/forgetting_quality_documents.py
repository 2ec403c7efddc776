"""The competition table's document-by-document part (#27): where each forget document lands
against retraining, per row, as a table and a plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import common
import numpy as np
from forgetting_quality_analysis import confidences

#: the rows the per-document plot draws (those present), against the retrain models' mean
DOCUMENT_ROWS = ("GA+GD", "DTM+ref", "DTM", "GA+GD+mask", "DTM+ref/all")
DOCUMENT_PLOT = "results_document_loglik.png"


def document_summary(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per row of :data:`DOCUMENT_ROWS` (and retrain): over the forget documents, the mean
    |mean log-likelihood - retrain 1..N's mean| (how far each document lands from retraining on
    average over seeds), and the mean standard deviation over seeds (how much it moves)."""
    n = results["options"]["n"]
    models = results["models"]
    retrain = sorted(models.get("retrain", []), key=lambda m: m["seed"])
    first = [m for m in retrain if m["seed"] <= n]
    second = [m for m in retrain if n < m["seed"] <= 2 * n]
    if len(first) < 2:
        return {}
    centre = confidences(first).mean(axis=0)
    out = {}
    for key, runs in [("retrain", second), *((k, models.get(k, [])) for k in DOCUMENT_ROWS)]:
        if len(runs) < 2:
            continue
        runs = sorted(runs, key=lambda m: m["seed"])[:n]
        c = confidences(runs)
        out[key] = {
            "distance": float(np.mean(np.abs(c.mean(axis=0) - centre))),
            "spread": float(np.mean(c.std(axis=0))),
        }
        targets = runs[0].get("document_targets")
        if targets:  # where the row landed against its own targets, and its best check
            docs = results["seen_model"]["doc_index"]
            goal = np.array([targets["target"][str(d)] for d in docs])
            out[key]["offset"] = float(np.mean(c.mean(axis=0) - goal))
            out[key]["inside"] = float(np.mean(np.abs(c - goal) <= targets["tolerance"]))
            out[key]["best_inside"] = float(np.mean([max(m.get("within") or [0.0]) for m in runs]))
    return out


def plot_documents(results: dict[str, Any], folder: Path) -> str | None:
    """Each forget document's mean log-likelihood: retrain 1..N's mean, and each row of
    :data:`DOCUMENT_ROWS` with its spread over seeds (mean ± standard deviation)."""
    n = results["options"]["n"]
    models = results["models"]
    rows = [k for k in DOCUMENT_ROWS if len(models.get(k, [])) >= 2 and k != "GA+GD"]
    retrain = [m for m in models.get("retrain", []) if m["seed"] <= n]
    if not rows or len(retrain) < 2:
        return None
    from matplotlib.figure import Figure

    centre = confidences(retrain).mean(axis=0)
    order = np.argsort(centre)
    x = np.arange(order.size)
    fig = Figure(figsize=(9.0, 4.2), dpi=110)
    ax = fig.subplots()
    ax.plot(x, centre[order], "k_", markersize=12, mew=2, label=f"retrain seeds 1–{n}: mean")
    width = 0.8 / (len(rows) + 1)
    for i, key in enumerate(["GA+GD", *rows]):
        runs = sorted(models.get(key, []), key=lambda m: m["seed"])[:n]
        if len(runs) < 2:
            continue
        c = confidences(runs)
        offset = (i - len(rows) / 2) * width
        ax.errorbar(
            x + offset,
            c.mean(axis=0)[order],
            yerr=c.std(axis=0)[order],
            fmt="o",
            ms=3,
            lw=1,
            capsize=2,
            color=f"C{i}",
            label=f"{key}: mean ± sd over seeds",
        )
    ax.set_xticks(x, [str(results["seen_model"]["doc_index"][j]) for j in order], fontsize=6)
    ax.set_xlabel("forget document (ordered by the retrain models' mean)")
    ax.set_ylabel("mean token log-likelihood (nats)")
    ax.set_title(
        "Where each forget document lands: unlearned models against retraining", fontsize=9
    )
    ax.legend(fontsize=7)
    return common.save_figure(fig, folder, DOCUMENT_PLOT)


def documents_text(results: dict[str, Any], labels: dict[str, str]) -> list[str]:
    summary = document_summary(results)
    if not any(k in summary for k in DOCUMENT_ROWS if k != "GA+GD"):
        return []
    lines = [
        "### Document by document",
        "",
        "How far each forget document lands from retraining: per row, over the forget documents, "
        "the mean distance between the document's mean log-likelihood over the row's models and "
        "over retrain seeds 1–N, and the mean standard deviation over the row's models (nats per "
        "token). The competition score needs both small: each document near where retraining "
        "leaves it, moved by the seeds about as much as retraining moves it.",
        "",
    ]
    body = [
        [
            labels.get(k, "retrain seeds N+1–2N (indistinguishable)"),
            _fmt(v["distance"]),
            _fmt(v["spread"], 4),
            _fmt(v.get("offset")),
            _fmt(v.get("inside"), 2),
            _fmt(v.get("best_inside"), 2),
        ]
        for k, v in summary.items()
    ]
    header = ["row", "distance to retrain", "spread over seeds", "offset from its targets"]
    header += ["inside the band at the end", "inside at the best check"]
    lines += common.markdown_table(header, body)
    lines += [
        "",
        "*Offset*: the mean over documents of (the row's mean log-likelihood − the document's "
        "target); negative: pushed past the targets. *Inside*: the share of (document, model) "
        "pairs within the tolerance of their target at the end, and the mean over models of the "
        "best share any check saw.",
    ]
    targets = [
        (k, m["document_targets"])
        for k in DOCUMENT_ROWS
        for m in results["models"].get(k, [])[:1]
        if m.get("document_targets")
    ]
    if targets:
        lines += [
            "",
            "Targets (fixed before training from the approximate split alone; the distance of the "
            "targets themselves to retrain seeds 1–N's means is measured afterwards, the retrain "
            "models being only the yardstick):",
        ]
        centre = _retrain_centre(results)
        for key, t in targets:
            shift = f", shift {t['shift']:+.3f}" if t.get("shift") is not None else ""
            miss = ""
            if centre is not None:
                miss = (
                    f"; the targets' distance to retrain {_fmt(_targets_miss(results, t, centre))}"
                )
            lines.append(
                f"- {labels.get(key, key)}: {t['kind']}{shift}, the estimate's error on the "
                f"approximate split {t['error']:.3f}, tolerance {t['tolerance']:.3f} nats{miss}"
            )
    lines += _goal(results, labels)
    lines += _why_not(results, summary, labels)
    if results.get("document_plot"):
        lines += ["", f"![each forget document's log-likelihood]({results['document_plot']})"]
    return lines + [""]


def _fmt(x, digits=3):
    return "–" if x is None else f"{x:.{digits}f}"


#: #27's goal: F at least half the retrain-vs-retrain row's F as the issue measured it (0.198,
#: before 0.2.0's reference search), with held-out retain and general accuracy ratios >= 0.98
GOAL_F, GOAL_RATIO = 0.099, 0.98


def _targets_miss(results: dict[str, Any], targets: dict, centre: np.ndarray) -> float:
    """The mean distance of a row's targets to retrain seeds 1..N's mean log-likelihoods."""
    docs = results["seen_model"]["doc_index"]
    return float(np.mean([abs(targets["target"][str(d)] - c) for d, c in zip(docs, centre)]))


def _met(row: dict[str, Any]) -> bool:
    """Did the row reach #27's goal (F and both held-out utility ratios)?"""
    ratios = (row.get("retain_ratio"), row.get("general_ratio"))
    return row["F"] >= GOAL_F and all(x is not None and x >= GOAL_RATIO for x in ratios)


def _retrain_centre(results: dict[str, Any]) -> np.ndarray | None:
    n = results["options"]["n"]
    first = [m for m in results["models"].get("retrain", []) if m["seed"] <= n]
    return confidences(first).mean(axis=0) if len(first) >= 2 else None


def _goal(results: dict[str, Any], labels: dict[str, str]) -> list[str]:
    """Whether each per-document row reached #27's goal."""
    rows = [r for r in results["rows"] if r["key"] in DOCUMENT_ROWS and r["key"] != "GA+GD"]
    if not rows:
        return []
    out = [
        "",
        f"**The goal** (F ≥ {GOAL_F}, half the retrain-vs-retrain F of 0.198 measured before "
        f"0.2.0; held-out retain and general accuracy ratios ≥ {GOAL_RATIO}):",
    ]
    for r in rows:
        out.append(
            f"- {labels.get(r['key'], r['key'])}: F {_fmt(r['F'])}, retain ratio "
            f"{_fmt(r.get('retain_ratio'))}, general ratio {_fmt(r.get('general_ratio'))}: "
            + ("reached" if _met(r) else "not reached")
        )
    return out


def _why_not(results: dict[str, Any], summary: dict, labels: dict[str, str]) -> list[str]:
    """What the table and the plot say about a goal not reached: how far the targets themselves
    miss retraining against the retrain models' own spread, and how each row lands on them."""
    rows = [r for r in results["rows"] if r["key"] in summary and "offset" in summary[r["key"]]]
    missed = [r for r in rows if not _met(r)]
    centre = _retrain_centre(results)
    if not missed or centre is None or "retrain" not in summary:
        return []
    misses = {}  # per kind of target: the mean distance of the targets to retrain's means
    for r in rows:
        t = results["models"][r["key"]][0]["document_targets"]
        misses.setdefault(t["kind"], _targets_miss(results, t, centre))
    spread = summary["retrain"]["spread"]
    closest = min(rows, key=lambda r: summary[r["key"]]["distance"])
    landed = "; ".join(
        f"{labels.get(r['key'], r['key'])}: offset {_fmt(summary[r['key']]['offset'])}, "
        f"{_fmt(summary[r['key']]['inside'], 2)} inside at the end, spread "
        f"{_fmt(summary[r['key']]['spread'])}"
        for r in rows
    )
    return [
        "",
        "**Why not, from the table and the plot.** The targets themselves miss retraining by "
        + ", ".join(
            f"{_fmt(m)} nats per document ({_KINDS.get(kind, kind)} targets, {m / spread:.1f}× "
            "the retrain models' own spread)"
            for kind, m in misses.items()
        )
        + f" (the spread: {_fmt(spread, 4)}): a row that "
        "landed every document on its target would still sit several spreads from retraining. "
        "And the rows land "
        f"unevenly on their targets: {landed}. The closest to retraining is "
        f"{labels.get(closest['key'], closest['key'])} "
        f"({_fmt(summary[closest['key']]['distance'])} nats per document, F {_fmt(closest['F'])}).",
    ]


_KINDS = {"reference": "the never-seen model's", "quantiles": "quantile"}
