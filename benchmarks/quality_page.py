"""The quality benchmark's page (``docs/results.md``) and its plots, from the stored results (what
``quality.py --render-only`` writes)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import common
from quality_analysis import DIST_SPLITS, SPLITS, annotate, answers, time_to_forget


def plot(results: dict[str, Any], folder: Path) -> dict[str, str]:
    from matplotlib.figure import Figure

    folder.mkdir(parents=True, exist_ok=True)
    target = results["target_ppl"]
    exact = results["exact_retrain"]["ppl"]
    methods = list(dict.fromkeys(run["method"] for run in results["runs"]))
    lrs = sorted({run["learning_rate"] for run in results["runs"]})
    styles = ["-", "--", ":", "-."]
    out = {}

    fig = Figure(figsize=(7.5, 4.5), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    colors = {}
    for i, m in enumerate(methods):
        colors[m] = f"C{i}"
        for run in (r for r in results["runs"] if r["method"] == m):
            xy = [(0, results["seen"]["ppl"]["forget"])]
            xy += [(c["step"], c["forget_ppl"]) for c in run["checks"] if c["forget_ppl"]]
            ls = styles[lrs.index(run["learning_rate"]) % len(styles)]
            ax.plot(
                *zip(*xy),
                ls,
                color=colors[m],
                marker="o",
                markersize=2.5,
                label=f"{m}, lr {run['learning_rate']:g}",
            )
    ax.axhline(target, color="black", ls="--", lw=1, label="target (approximate)")
    if exact["forget"]:
        ax.axhline(exact["forget"], color="black", ls=":", lw=1, label="exact retrain")
    out["forget_curves"] = _finish(
        fig,
        folder,
        "results_forget_curves.png",
        "step",
        "forget perplexity",
        "Forget perplexity during unlearning",
    )

    fig = Figure(figsize=(7.5, 4.5), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    markers = {b: mk for b, mk in zip(results["grid"]["budgets"], "os^vD")}
    for run in results["runs"]:
        for r in run["records"]:
            f, ret = r["ppl"]["forget"], r["ppl"]["retain"]
            if f and ret:
                ax.scatter(
                    f, ret, color=colors[run["method"]], marker=markers.get(r["step"], "o"), s=22
                )
    for m in methods:
        ax.scatter([], [], color=colors[m], label=m)
    for b, mk in markers.items():
        ax.scatter([], [], facecolor="white", edgecolor="black", marker=mk, label=f"{b} steps")
    ax.scatter(
        results["seen"]["ppl"]["forget"],
        results["seen"]["ppl"]["retain"],
        marker="P",
        color="black",
        s=60,
        label="seen (before)",
    )
    ax.scatter(
        exact["forget"],
        exact["retain"],
        marker="*",
        color="gold",
        edgecolor="black",
        s=120,
        label="exact retrain",
    )
    ax.axvline(target, color="black", ls="--", lw=1)
    ax.set_xscale("log")
    out["tradeoff"] = _finish(
        fig,
        folder,
        "results_tradeoff.png",
        "forget perplexity (higher = more forgotten)",
        "retain perplexity (lower = utility kept)",
        "Forget / utility trade-off (dashed: target)",
    )
    return out


def _finish(fig, folder: Path, name: str, xlabel: str, ylabel: str, title: str) -> str:
    """Both plots' last steps: a log y axis, the labels, the legend; saved as ``name``."""
    ax = fig.axes[0]
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=6, ncol=2, loc="upper left")
    return common.save_figure(fig, folder, name)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:+.0f}%"


#: the columns of a scored point: perplexity per split, two MIA AUCs, the distance to exact
POINT = [
    "forget",
    "approx.",
    "retain",
    "general",
    "MIA AUC loss",
    "MIA AUC Min-K%++",
    "Δ to exact F / A / R",
    "dist",
]


def _row(p: dict[str, Any]) -> list[str]:
    """The :data:`POINT` cells of a scored point."""
    ppl, auc, d = p["ppl"], p["mia_auc"], p["distance_to_exact"]
    return [
        *(common.fmt(ppl[s]) for s in SPLITS),
        *(common.fmt(auc[m]) for m in ("loss", "min_k_plus_plus")),
        " / ".join(_pct(d["relative"][s]) for s in DIST_SPLITS),
        common.fmt(d["mean_abs_log"], 3),
    ]


def _stop_row(run: dict[str, Any]) -> list[Any]:
    st, lr = run["stop"], f"{run['learning_rate']:g}"
    if st:
        return [run["method"], lr, st["step"], f"{st['train_seconds']:.0f}", *_row(st)]
    return [run["method"], lr, f"not reached in {run['steps']}", "—", *["—"] * len(POINT)]


def _grid_rows(run: dict[str, Any]) -> list[list[Any] | str]:
    lr = f"{run['learning_rate']:g}"
    rows: list[list[Any] | str] = [
        [
            run["method"],
            lr,
            r["step"],
            f"{r['train_seconds']:.0f}",
            *_row(r),
            "yes" if r["reached_target"] else "no",
        ]
        for r in run["records"]
    ]
    if run["diverged"]:  # one cell across the point's columns
        cells = [run["method"], lr, run["steps"], "—", f"diverged: {run['diverged']}"]
        rows.append("| " + " | ".join(map(str, cells)) + " |" + " |" * len(POINT))
    return rows


def render(results: dict[str, Any]) -> str:
    p, g = results["provenance"], results["grid"]
    s = results["settings"]
    a = results["answers"]
    target = results["target_ppl"]
    lines = [
        "# Results: unlearning quality on the demo task",
        "",
        "Generated by `python benchmarks/quality.py` (see `benchmarks/README.md`). "
        + common.provenance_line(p),
        "",
        *(
            [
                f"**Partial results**: {len(results['runs'])} of "
                f"{len(results['methods']) * len(g['lrs'])} planned runs so far, "
                f"{results.get('total_seconds', 0) / 60:.0f} min over every invocation "
                "(`python benchmarks/quality.py --resume` continues); methods missing below were "
                "not measured.",
                "",
            ]
            if not results.get("complete", True)
            else []
        ),
        f"**Task.** SmolLM2-135M-Instruct after continued pre-training on the demo corpus "
        f"(forget + retain standard-library code, {s['pretrain_epochs']} epoch(s), lr "
        f"{s['pretrain_lr']:g}) is the model to unlearn (*seen*). The *exact-retrain* model is the "
        "same continued pre-training without the forget set. Windows of "
        f"{s['max_length']} tokens, forget batch {s['unlearn_batch_size']} (+ the same number of "
        f"retain windows for GA+GD / GA+KL); one epoch over the forget set = {g['epoch_steps']} "
        "steps. Constant learning rate, AdamW, no warm-up (the demo's settings).",
        "",
        f"**Grid.** {len(results['methods'])} methods × learning rates "
        f"{', '.join(f'{x:g}' for x in g['lrs'])} × step budgets {', '.join(map(str, g['budgets']))} "
        f"(one run per method and rate, scored at each budget: with a constant rate the model after "
        f"k steps is the k-step run). Forget perplexity is checked every {g['check_every']} steps; "
        "the first check at or above the target is the *stop* point (what "
        "`ApproximateRetrainStopping` returns) and is scored in full. Scoring uses "
        f"{g['eval_chunks']} evaluation windows of each split, spread evenly over it (to fit the "
        "time budget), so "
        "perplexities are comparable within this page, not with the demo's report; MIA AUCs on "
        f"{g['eval_chunks']} vs {g['eval_chunks']} documents move in steps of "
        f"{1 / g['eval_chunks'] ** 2:.4f} and are noisy.",
        "",
        "**Columns.** Perplexity per split; membership-inference AUC (forget = members, "
        "approximate = non-members; 0.5 = cannot tell them apart); Δ to exact: relative perplexity "
        "difference to the exact-retrain model on forget / approximate / retain; dist: mean "
        "|ln(ppl / ppl_exact)| over those three splits (0 = indistinguishable from exact retrain).",
        "",
        "## Reference models",
        "",
        *common.markdown_table(
            ["model", *POINT],
            [
                ["seen (before unlearning)", *_row(results["seen"])],
                ["exact retrain", *_row(results["exact_retrain"])],
            ],
        ),
        "",
        f"Approximate-retrain target (seen model's approximate perplexity): **{target:.2f}**.",
        "",
        "## (a) Robustness to learning rate and steps",
        "",
        "Over each method's grid cells (learning rate × budget): how many reached the target, the "
        "worst and best distance to the exact-retrain model, and the worst utility cost (mean "
        "log-increase of retain and general perplexity over the seen model, leaving out the split "
        "the method's retain term trains on: general for the *general* variants, retain for the "
        "*in-dist* ones; 0.10 ≈ +10%).",
        "",
    ]
    rob = a["a_robustness"]["by_method"]
    cost = ("worst_distance", "best_distance", "spread_distance", "worst_utility_cost")
    header = [
        "method",
        "cells reaching target",
        "worst dist",
        "best dist",
        "spread",
        "worst utility cost",
    ]
    rows = [
        [m, f"{rob[m]['reached']}/{rob[m]['cells']}", *(common.fmt(rob[m][k], 3) for k in cost)]
        for m in a["a_robustness"]["ranking"]
    ]
    lines += common.markdown_table(header, rows)
    lines += [
        "",
        _answer_a(results),
        "",
        "## (b) Does stopping at the target land near exact retrain?",
        "",
        *common.markdown_table(
            ["method", "lr", "stop step", "train s", *POINT], map(_stop_row, results["runs"])
        ),
    ]
    lines += [
        "",
        _answer_b(results),
        "",
        "## (c) Forget / utility trade-off",
        "",
        "Best stop point of each method (lowest utility cost among its learning rates):",
        "",
    ]
    best = a["c_tradeoff"]["best_stop_per_method"]
    header = ["method", "lr", "stop step", "utility cost", "dist to exact", "MIA AUC (loss)"]
    rows = [
        [
            m,
            f"{b['learning_rate']:g}",
            b["step"],
            common.fmt(b["utility_cost"], 3),
            common.fmt(b["distance"], 3),
            common.fmt(b["mia_loss_auc"]),
        ]
        for m, b in ((m, best[m]) for m in a["c_tradeoff"]["ranking"])
    ]
    lines += common.markdown_table(header, rows)
    lines += ["", _answer_c(results), ""]
    if results.get("commentary"):
        lines += ["## Reading the numbers", "", results["commentary"].strip(), ""]
    plots = results.get("plots", {})
    if plots:
        lines += [
            "![forget perplexity curves](" + plots["forget_curves"] + ")",
            "",
            "![forget / retain trade-off](" + plots["tradeoff"] + ")",
            "",
        ]
    lines += [
        "## Full grid",
        "",
        *common.markdown_table(
            ["method", "lr", "steps", "train s", *POINT, "reached"],
            [row for run in results["runs"] for row in _grid_rows(run)],
        ),
    ]
    if results.get("notes", {}).get("grid"):  # a note stored with the results (what changed since)
        lines += ["", results["notes"]["grid"]]
    lines += ["", "## Time to forget", "", _ttf_text(results), ""]
    cut = results.get("cut")
    if cut:
        lines += ["## What was cut to fit the time budget", "", cut, ""]
    return "\n".join(lines)


def _answer_a(results):
    a = results["answers"]["a_robustness"]
    rob, order = a["by_method"], a["ranking"]
    if not order:
        return "No runs."
    top = order[0]
    gd = "GA+GD in-dist"
    text = (
        f"**Answer (a).** Ranked by worst-case utility cost over the grid (robust: no "
        f"learning rate or budget tried damages retain and general perplexity), the most "
        f"robust method here is **{top}** (worst "
        f"{common.fmt(rob[top]['worst_distance'], 3)}, worst utility cost "
        f"{common.fmt(rob[top]['worst_utility_cost'], 3)}; target reached in "
        f"{rob[top]['reached']} of {rob[top]['cells']} cells)."
    )
    if gd in rob:
        pos = order.index(gd) + 1
        if top == gd:
            text += (
                " This agrees with the paper: GA+GD on in-distribution retain data is the most "
                "robust to learning rate and steps."
            )
        else:
            text += (
                f" GA+GD on in-distribution retain data ranks {pos} of {len(order)} (worst "
                f"{common.fmt(rob[gd]['worst_distance'], 3)}, worst utility cost "
                f"{common.fmt(rob[gd]['worst_utility_cost'], 3)}), so the paper's finding "
                f"{'holds only in part' if pos <= 3 else 'is not reproduced'} on this task."
            )
    ga = rob.get("GA")
    if ga:
        text += (
            f" Plain GA for comparison: worst distance {common.fmt(ga['worst_distance'], 3)}, "
            f"worst utility cost {common.fmt(ga['worst_utility_cost'], 3)}."
        )
    return text


def _answer_b(results):
    b = results["answers"]["b_stop_vs_exact"]
    if not b["stops"]:
        return "**Answer (b).** No run reached the target within its budget."
    return (
        f"**Answer (b).** {b['stops']} of {b['runs']} runs reached the target. Their median "
        f"distance to the exact-retrain model at the stop is "
        f"{common.fmt(b['median_stop_distance'], 3)}, against "
        f"{common.fmt(b['median_end_distance'], 3)} for all runs at the largest budget and "
        f"{b['seen_distance']:.3f} for the seen model before unlearning; "
        f"{b['stops_closer_than_seen']} of {b['stops']} stops are closer to exact retrain than "
        "the seen model was. "
        + (
            "Stopping at the target lands closer to exact retrain than training on does."
            if (b["median_stop_distance"] or math.inf) < (b["median_end_distance"] or math.inf)
            else "Stopping at the target does not beat the fixed budgets here."
        )
    )


def _answer_c(results):
    c = results["answers"]["c_tradeoff"]
    if not c["best"]:
        return "**Answer (c).** No method reached the target, so no trade-off can be read."
    b = c["best_stop_per_method"][c["best"]]
    return (
        f"**Answer (c).** Among runs that reached the target, **{c['best']}** (lr "
        f"{b['learning_rate']:g}, stop at step {b['step']}) forgets to the target at the lowest "
        f"utility cost ({b['utility_cost']:.3f}, i.e. perplexity on the retain/general text it "
        f"did not train on {100 * (math.exp(b['utility_cost']) - 1):+.1f}% on average), "
        f"distance to exact retrain "
        f"{b['distance']:.3f}, MIA AUC (loss) {common.fmt(b['mia_loss_auc'])}."
    )


def _ttf_text(results):
    rows = results.get("time_to_forget") or []
    pre = results.get("pretraining") or {}
    if not rows:
        return "Not measured in this run."
    lines = []
    if pre:
        lines.append(
            f"Continued pre-training measured at {pre['seconds_per_step']:.1f} s/step (batch "
            f"{results['settings']['pretrain_batch_size']}, {pre['timed_steps']} timed steps): "
            f"on D (forget + retain) {pre['pretrain']['steps']} steps ≈ "
            f"{pre['pretrain']['seconds']:.0f} s; exact retrain on D \\ u "
            f"{pre['pretrain_without_forget']['steps']} steps ≈ "
            f"{pre['pretrain_without_forget']['seconds']:.0f} s. The Kaggle unlearning challenge "
            "allowed 20% of retraining time."
        )
        lines.append("")
    lines += [
        "Percentages are of the continued pre-training's time (D) and of the exact retrain's "
        "(D \\ u); in brackets, of their tokens (each token one forward and backward pass, "
        "so a ratio that timing noise from other processes on the machine does not touch).",
        "",
    ]
    header = [
        "method",
        "lr",
        "schedule",
        "steps",
        "train s",
        "tokens",
        "% of continued pre-training",
        "% of exact retrain",
        "forget ppl",
        "retain ppl",
        "general ppl",
        "utility cost",
        "dist",
    ]
    lines += common.markdown_table(header, [_ttf_row(r, pre) for r in rows])
    return "\n".join(lines)


def _ttf_row(r: dict[str, Any], pre: dict[str, Any]) -> list[Any]:
    head = [r["method"], f"{r['learning_rate']:g}", r["schedule"]]
    if not r["reached"]:
        return [*head, "not reached", *["—"] * 9]
    share = {
        k: f"{_frac(r.get(f'fraction_of_{k}'))} ({_frac(_tok(r, pre, k))})"
        for k in ("pretrain", "pretrain_without_forget")
    }
    return [
        *head,
        r["step"],
        f"{r['train_seconds']:.0f}",
        r["tokens"],
        share["pretrain"],
        share["pretrain_without_forget"],
        *(common.fmt(r["ppl"][s]) for s in ("forget", "retain", "general")),
        common.fmt(r["utility_cost"], 3),
        common.fmt(r["distance"], 3),
    ]


def _tok(row, pre, key):
    total = (pre or {}).get(key, {}).get("tokens")
    return row["tokens"] / total if total else None


def _frac(x):
    return "—" if x is None else f"{100 * x:.1f}%"


def write_markdown(results: dict[str, Any], path: Path) -> Path:
    """The page, keeping the sections other benchmarks wrote into it (between their
    ``<!-- name:start -->`` / ``<!-- name:end -->`` markers: robustness, forgetting quality)."""
    import re

    path.parent.mkdir(parents=True, exist_ok=True)
    kept = ""
    if path.exists():
        pattern = r"(?s)<!-- (\w+):start -->.*?<!-- \1:end -->"
        kept = "".join("\n" + m.group(0) + "\n" for m in re.finditer(pattern, path.read_text()))
    path.write_text(render(results) + "\n" + kept)
    return path


def write(results: dict[str, Any], json_path: Path, md_path: Path) -> None:
    """Analyse, plot, and write the JSON and the page (after every run)."""
    annotate(results)
    results["answers"] = answers(results)
    results["time_to_forget"] = time_to_forget(results)
    results["plots"] = plot(results, md_path.parent)
    common.write_json(json_path, results)
    write_markdown(results, md_path)
