"""The forgetting-quality benchmark's section of ``docs/results.md`` and its plot, from the stored
results (what ``forgetting_quality.py --render-only`` writes)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import common
import numpy as np
from forgetting_quality_analysis import analyse, bucket_labels, confidences, mean_of, other_search
from forgetting_quality_documents import documents_text, plot_documents

MARKER = "forgetting_quality"
PLOT_NAME = "results_forgetting_quality.png"


def _f(x, digits=3):
    return common.fmt(x, digits)


def _sec(x):
    return "—" if x is None else f"{x:.1f}" if x < 10 else f"{x:.0f}"


POPULATION_HEADER = (
    "population",
    "models",
    "steps",
    "forget ppl (min–max)",
    "confidence spread",
    "retain acc",
    "general acc",
    "s per model (steps + checks)",
)


def _population_rows(results, labels: dict[str, str]) -> list[str]:
    rows = []
    names = {"retrain": "retrain (D \\ u)", "seen": "seen (D)"}
    names["retrain_heldout"] = "retrain (D \\ u) seeds 1–N again, retain on the held-out half"
    names.update({k: labels[k] for k in results["options"]["methods"]})
    for key, name in names.items():
        models = results["models"].get(key) or []
        if not models:
            continue
        ppl = [m["forget_ppl"] for m in models if m.get("forget_ppl")]
        steps = sorted({m["steps"] for m in models})
        spread = float(np.mean(np.std(confidences(models), axis=0))) if len(models) > 1 else None
        reached = [m for m in models if m.get("reached_target") is False]
        diverged = [m for m in models if m.get("diverged")]
        note = f"; {len(reached)} missed the target" if reached else ""
        note += f"; {len(diverged)} diverged" if diverged else ""
        rows.append(
            [
                name,
                len(models),
                ", ".join(map(str, steps)) + note,
                f"{_f(float(np.mean(ppl)), 2)} ({_f(min(ppl), 2)}–{_f(max(ppl), 2)})",
                _f(spread, 4),
                _f(mean_of(models, "retain_acc")),
                _f(mean_of(models, "general_acc")),
                _sec(mean_of(models, "seconds")),
            ]
        )
    return common.markdown_table(POPULATION_HEADER, rows)


def _mixed_hosts(results) -> bool:
    """Were the models trained on more than one machine (a run resumed elsewhere)?"""
    return len({m.get("host") for ms in results["models"].values() for m in ms}) > 1


def _left(results) -> dict[str, int]:
    """The models the plan still needs, by population."""
    o = results["options"]
    n = o["n"]
    wanted = {"retrain": 2 * n, "seen": n, **{m: n for m in o["methods"]}}
    if any(m.get("retain_split") == "heldout" for ms in results["models"].values() for m in ms):
        wanted["retrain_heldout"] = n
    have = {k: len(v) for k, v in results["models"].items()}
    return {k: w - have.get(k, 0) for k, w in wanted.items() if w > have.get(k, 0)}


def _time_taken(results) -> str:
    """How long the benchmark took, over every (resumed) run and machine."""
    runs = results["runs"]
    total = sum(r["seconds"] for r in runs)
    parts = [
        f"runs before runs were recorded, the last begun {r['date']} at `{r['commit']}`: "
        f"{r['models']} models, {r['seconds'] / 60:.0f} min of their wall times (setup left out)"
        if r.get("models_only")
        else f"{r['date']} at `{r['commit']}`, machine {r['host'] or 'not recorded'}: "
        f"{r['models']} models in {r['seconds'] / 60:.0f} min"
        for r in runs
    ]
    lead = "took" if results.get("complete") else "has taken so far"
    text = f"**Time.** The benchmark {lead} {total / 60:.0f} min ({'; '.join(parts)})."
    if _mixed_hosts(results):
        text += (
            " The machines differed in speed (the provenance line is the latest run's): seconds "
            "per model are compared only between models trained on one machine (the time ratio "
            "uses the machine that trained most of each method's models), and the population "
            "table's seconds average over machines."
        )
    return text


def _efficiency(results) -> str:
    rows = [r for r in results["rows"] if r["kind"] == "method" and r["time_ratio"] is not None]
    if not rows:
        return "no method is measured yet."
    fast = [r["label"] for r in rows if r["time_ratio"] <= 0.2]
    if fast:
        return f"it is met by {', '.join(fast)}."
    retrain = sorted({_sec(r["seconds_retrained"]) for r in rows}, key=float)
    span = f"{retrain[0]} s of steps"
    if len(retrain) > 1:  # rows timed on different machines
        span = f"{retrain[0]}–{retrain[-1]} s of steps (on the machine that timed each row)"
    return (
        f"no method meets it: retraining on the demo task is only {span}, and the unlearning "
        "runs take "
        f"{min(r['time_ratio'] for r in rows):.1f}–{max(r['time_ratio'] for r in rows):.1f}× that."
    )


def _search_effect(results) -> str:
    rows = results["rows"]
    differ = [r["label"] for r in rows if abs(r["F"] - r["F_other"]) > 1e-12]
    if not rows:
        return "No row yet."
    moved = ""
    if results["options"]["search"] == "reference":
        moved = (
            " Before 0.2.0 this section's *F* (and the permutation null and verdict, which use "
            "*F*'s search) was the every-interval form, now *F (other)*;"
        )
    if not differ:
        return moved + " the same F on every row: the search changes nothing at this scale."
    return moved + f" F differs on {len(differ)} of {len(rows)} rows ({'; '.join(differ)})."


def _histogram(row) -> str:
    return " / ".join(str(c) for c in row["points_histogram"].values())


def _verdict_text(results) -> str:
    v, null = results["verdict"], results.get("null")
    rows = {r["key"]: r for r in results["rows"]}
    if not v.get("complete"):
        return (
            "**Calibration verdict.** Not yet available: both calibration rows and the "
            "permutation null need the 2N retrain and the N seen models."
        )
    seen = rows["seen"]
    head = (
        f"Indistinguishable populations (the {2 * null['n']} retrain models split at random "
        f"into two halves, {null['draws']} draws) score F = {null['median']:.3f} (median; 5–95%: "
        f"{null['p5']:.3f}–{null['p95']:.3f}); never-unlearned models score "
        f"F = {seen['F']:.3f}. "
    )
    if v["separated"]:
        text = head + (
            "**The calibration rows separate**: read a method's F on this scale, from "
            f"{seen['F']:.3f} (no better than not unlearning) to about {null['median']:.3f} "
            "(indistinguishable from exact retrain at this N, not 1: with few models the best of "
            "many threshold rules finds some ε in two identical populations). Differences smaller "
            f"than the null's 5–95% width ({v['noise']:.3f}) are noise."
        )
    else:
        why = (
            "at this N even two halves of the retrain models score 0 in 5% of the draws, so a 0 "
            "proves nothing; raise N"
            if v.get("reason") == "small_n"
            else "the seeds move the forget confidences about as much as training on the forget "
            "set does; raise N"
        )
        text = head + (
            "**The calibration rows do not separate: this N cannot rank methods**: a method's F "
            f"here says nothing about how close it is to exact retrain ({why})."
        )
    if v.get("peaky"):
        e = len(results["seen_model"]["confidence"])
        more = (
            " (`--pretrain-batch-size 2`: 4× the steps per model at about the same compute)"
            if results["options"]["recipe"]["batch_size"] > 2
            else ""
        )
        text += (
            " Peaky examples (one population's spread below 1% of the other's, so ε is the cap "
            "by the reference's rule and the example earns 0 whatever an attack could do): "
            + "; ".join(f"{rows[k]['label']}: {c} of {e}" for k, c in v["peaky"].items())
            + ". Where they dominate a row, its F says that the seeds barely move one side, not "
            f"how far apart the sides are; more randomness per model would fix that{more}."
        )
    if v["methods"]:
        text += (
            " Methods: "
            + "; ".join(f"{rows[k]['label']}: {what}" for k, what in v["methods"].items())
            + "."
        )
    return "**Calibration verdict.** " + text


def _row_cells(r: dict[str, Any], mixed: bool) -> list[Any]:
    """One row of the competition table; ``mixed``: the models came from several machines, so the
    row says how many models its time ratio compares."""
    partial = "" if r["n"] >= r["planned"] else f" (partial: {r['n']} of {r['planned']})"
    time_ratio = "—" if r["kind"] == "calibration" else common.fmt(r["time_ratio"], 2)
    timed = r.get("timed_models")
    if r["kind"] != "calibration" and timed and mixed:
        time_ratio += f" (one machine: {timed[0]} vs {timed[1]} models)"
    return [
        r["label"] + partial,
        r["n"],
        f"**{_f(r['F'])}**",
        _histogram(r),
        r["peaky_examples"],
        _f(r["F_other"]),
        _f(r["retain_ratio"]),
        _f(r["general_ratio"]),
        _f(r["score"]),
        _sec(r["seconds_unlearned"]),
        _sec(r["seconds_retrained"]),
        time_ratio,
    ]


def render(results: dict[str, Any], labels: dict[str, str]) -> str:
    o, s = results["options"], results["settings"]
    n, search = o["n"], o["search"]
    bound = math.ceil(math.log(n - 1)) if n > 2 else 0
    buckets = " / ".join(f"{b:g}" for b in bucket_labels(n))
    searches = {
        "reference": "the competition's own search (`metric.py`: thresholds on a 0.01 grid, the "
        "two-threshold rule within a window of 2.0 of the peakier spread, both in nats per token "
        "here; `--search reference`)",
        "every-interval": "a threshold at every pooled score and every interval "
        "(`--search every-interval`; this page's form before 0.2.0)",
    }
    win, other = searches[search], searches[other_search(search)]
    recipe = o["recipe"]
    if recipe == o["demo_recipe"]:
        recipe_text = "the demo's exact-retrain recipe"
    else:  # more data-order randomness than the demo's; the seen model for unlearning too
        recipe_text = (
            f"the demo's exact-retrain recipe with batch {recipe['batch_size']} / "
            f"{recipe['epochs']} epoch(s) instead of {o['demo_recipe']['batch_size']} / "
            f"{o['demo_recipe']['epochs']}, the seen model handed to unlearning trained likewise"
        )
    heldout = n if "retrain_heldout" in results["models"] else 0  # the held-out rows' retrain
    planned = 2 * n + n + heldout + n * len(o["methods"])
    done = sum(len(v) for v in results["models"].values())
    lines = [
        "## Forgetting quality (NeurIPS 2023 competition score)",
        "",
        "Generated by `python benchmarks/forgetting_quality.py` (see its docstring). "
        + common.provenance_line(results["provenance"]),
        "",
    ]
    if results.get("rendered"):  # re-scored from the stored confidences, nothing retrained
        r = results["rendered"]
        lines[-1:-1] = [
            f"Re-rendered {r['date']} at commit `{r['commit']}` from the stored per-model "
            f"confidences (nothing retrained), with the library {r['library']}.",
            "",
        ]
    if not results.get("complete"):
        left = _left(results)
        lines += [
            f"**Partial results**: {done} of {planned} models scored so far; left: "
            + ", ".join(f"{k} {v}" for k, v in left.items())
            + " (`python benchmarks/forgetting_quality.py --resume` continues).",
            "",
        ]
    if results.get("runs"):
        lines += [_time_taken(results), ""]
    lines += [
        f"**Populations.** N = {n} models each. *Retrain*: continued pre-training of the base "
        f"model on retain only (D \\ u), {recipe_text} ({recipe['epochs']} "
        f"epoch(s), batch {recipe['batch_size']}, lr {s['pretrain_lr']:g}), seeds 1–{2 * n}. "
        f"*Seen*: the same on forget + retain (D), seeds 1–{n} (calibration only). *Methods*: "
        f"unlearning from the one seen model (seed 0), seeds 1–{n}, lr {o['lr']:g}, the stop at "
        f"the approximate-retrain target with tolerance {s['target_tolerance']:g}, at most "
        f"{o['max_steps']} steps. A seed sets `seed_everything` and the data order (forget "
        "shuffle, retain stream); the corpus is the same for all. All models start from the same "
        "pre-trained weights and SmolLM2 has no dropout, so data order is the only randomness. "
        "Each model was trained, scored in memory and dropped.",
        "",
        "**Confidence.** Per forget document, its mean token log-likelihood (−ln of its "
        "perplexity): the quantity the methods optimise and the approximate-retrain target reads. "
        "The logit of the mean token probability was not used: the mean probability is dominated "
        "by the many near-certain tokens of code that every model predicts, which hides the hard "
        "tokens where memorisation shows. The competition's threshold grid (0.01) and window "
        "(2.0) are in the units of its logit-scaled confidences; with this confidence they are in "
        "nats per token of mean log-likelihood, where the seeds move a document by a few "
        "hundredths (the confidence spread below), so the grid resolves only a few partitions of "
        "an example's 2N scores.",
        "",
        f"**What N = {n} limits.** ε resolves only up to ln(N − 1) = {math.log(n - 1):.2f}: points "
        f"come in buckets {buckets} (ε ≥ {bound} or a perfect separation earns 0), against 14 "
        "buckets up to ε = 7 for the competition's N = 512. With few models, even two identical "
        "populations get ε above 0.5 on most examples (the best of many rules), so F of "
        "*indistinguishable* populations is well below 1: the calibration rows give the scale. "
        f"*F*: ε from {win}. *F (other)*: ε from {other}.{_search_effect(results)}",
        "",
    ]
    header = [
        "row",
        "N",
        "F",
        f"points per example ({buckets})",
        "peaky",
        "F (other)",
        "retain acc ratio",
        "general acc ratio",
        "score",
        "s per model, unlearned side",
        "s per model, retrain",
        "time ratio",
    ]
    mixed = _mixed_hosts(results)
    lines += common.markdown_table(header, [_row_cells(r, mixed) for r in results["rows"]])
    lines += [
        "",
        "Score = F × retain acc ratio × general acc ratio (next-token accuracy, averaged over each "
        "side's models). Seconds are the training steps (for the methods stopped at the target, "
        "plus the forget-split checks the stop needs); model loading and the scoring are left out "
        "on both sides. The competition asked for unlearning within 20% of retraining time (time "
        f"ratio ≤ 0.20). Here {_efficiency(results)} The retain acc ratio of methods with an "
        "in-distribution retain term is measured on the very split they train on.",
        "",
        _verdict_text(results),
        "",
    ]
    lines += _population_rows(results, labels)
    lines += [
        "",
        "*Confidence spread*: the standard deviation over a population's models of a document's "
        "mean log-likelihood, averaged over documents (how much the seeds move the models).",
        "",
    ]
    if results.get("plot"):
        lines += [f"![points per example and F per row]({results['plot']})", ""]
    lines += documents_text(results, labels)
    return "\n".join(lines)


def plot(results: dict[str, Any], folder: Path) -> str | None:
    if not results["rows"]:
        return None
    from matplotlib.figure import Figure

    rows = results["rows"]
    n = results["options"]["n"]
    labels = [r["label"] for r in rows]
    fig = Figure(figsize=(9.0, 1.2 + 0.55 * len(rows)), dpi=110)
    ax, bx = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3, 2]})
    y = np.arange(len(rows))
    left = np.zeros(len(rows))
    for i, b in enumerate(bucket_labels(n)):
        share = np.array(
            [r["points_histogram"].get(f"{b:g}", 0) / max(1, len(r["points"])) for r in rows]
        )
        color = "0.35" if b == 0 else f"C{i}"
        ax.barh(y, share, left=left, color=color, label=f"{b:g} points")
        left += share
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of forget examples")
    ax.set_title(f"points per example (N = {n})", fontsize=9)
    ax.legend(fontsize=6, loc="lower right", ncol=2)
    null = results.get("null")
    if null:
        bx.axvspan(null["p5"], null["p95"], color="0.85", label="indistinguishable, 5–95%")
        bx.axvline(null["median"], color="0.4", ls="--", lw=1)
    bx.scatter([r["F"] for r in rows], y, color="black", zorder=3, label="F")
    bx.set_xlim(0, max(0.3, 1.1 * max(r["F"] for r in rows)))
    bx.set_xlabel("forgetting quality F")
    bx.set_title("F per row", fontsize=9)
    bx.legend(fontsize=6, loc="lower right")
    return common.save_figure(fig, folder, PLOT_NAME)


def write(results: dict[str, Any], json_path: Path, md_path: Path, labels: dict[str, str]) -> None:
    """Analyse, plot, and write the JSON and the markdown section (after every model)."""
    analyse(results, labels)
    results["plot"] = plot(results, md_path.parent)
    document_plot = plot_documents(results, md_path.parent)
    if document_plot:
        results["document_plot"] = document_plot
    common.write_json(json_path, results)
    title = "Results: unlearning quality on the demo task"
    common.replace_section(md_path, MARKER, render(results, labels), title=title)
