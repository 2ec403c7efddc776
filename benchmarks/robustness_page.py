"""The robustness benchmark's section of ``docs/results.md`` and its plot, from the stored results
(what ``robustness.py --render-only`` writes)."""

from __future__ import annotations

import math
from pathlib import Path

import common
from robustness_analysis import ENDS, SLICE_BASE, analyse, mean_of, quality_rankings, variant_order

#: metrics in the table and the plot: forget log-perplexity and the loss attack's AUC
TABLE_METRICS = ("forget/nll", "mia/loss_auc")
METRIC_LABELS = {"forget/nll": "forget log-ppl", "mia/loss_auc": "MIA AUC (loss)"}


def _cell(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _label(variant: str) -> str:
    if variant == "none":
        return "none (at the stop)"
    if variant == SLICE_BASE:
        return "none, rest of the forget set"
    if variant.startswith("relearn_"):
        data, k = variant.removeprefix("relearn_").rsplit("_k", 1)
        return f"relearn on {data.replace('forget_slice', 'forget slice')}, {k} step(s)"
    return variant.replace("quantize_", "quantize ").replace("bit", "-bit")


def plot(results: dict, folder: Path) -> str | None:
    from matplotlib.figure import Figure

    analysis = results.get("analysis") or {}
    fractions = analysis.get("fractions") or {}
    if not fractions:
        return None
    opts = results["options"]
    panels = [("relearn", d) for d in opts["relearn_data"]] + [("quantize", None)]
    fig = Figure(figsize=(3.6 * len(panels), 6.4), dpi=110)
    colors = {m: f"C{i}" for i, m in enumerate(results["methods"])}
    for row, metric in enumerate(TABLE_METRICS):
        for col, (kind, data) in enumerate(panels):
            ax = fig.add_subplot(len(TABLE_METRICS), len(panels), row * len(panels) + col + 1)
            for method, rows in fractions.items():
                if kind == "relearn":
                    base = SLICE_BASE if data == "forget_slice" else "none"
                    xs = [0, *opts["relearn_steps"]]
                    names = [base, *[f"relearn_{data}_k{k}" for k in opts["relearn_steps"]]]
                else:
                    xs = list(range(1 + len(opts["bits"])))
                    names = ["none", *[f"quantize_{b}bit" for b in opts["bits"]]]
                ys = [rows.get(n, {}).get(metric, {}).get("fraction") for n in names]
                ys = [math.nan if y is None else y for y in ys]
                ax.plot(xs, ys, marker="o", ms=3, color=colors.get(method), label=method)
            if kind == "quantize":
                ax.set_xticks(range(1 + len(opts["bits"])))
                ax.set_xticklabels(["none", *[f"{b}-bit" for b in opts["bits"]]])
                title = "quantization"
            else:
                ax.set_xticks([0, *opts["relearn_steps"]])
                ax.set_xlabel("relearning steps", fontsize=8)
                title = f"relearn on {'forget slice' if data == 'forget_slice' else data}"
            ax.axhline(0, color="black", lw=0.8, ls=":")
            ax.axhline(1, color="black", lw=0.8, ls="--")
            ax.set_title(f"{title}: {METRIC_LABELS[metric]}", fontsize=8)
            if col == 0:
                ax.set_ylabel("recovered fraction (0 = R, 1 = B)", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.axes[0].legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results_robustness.png"
    fig.savefig(path)
    return path.name


def _answer(results: dict) -> str:
    a = results["analysis"]["answers"]
    rank, by = a["ranking"], a["by_method"]
    if not rank:
        return (
            "**Answer.** No recovered fraction could be computed (the two ends could not be "
            "told apart after any attack, or no method was attacked yet)."
        )
    best, worst = rank[0], rank[-1]

    def describe(m: str) -> str:
        b = by[m]
        return (
            f"mean {_cell(b['mean'])} over {b['scored_variants']} attack variants, worst "
            f"{_cell(b['worst'])} after {_label(b['worst_variant'] or '')}; "
            f"{_cell(b['at_stop'])} at the stop, before any attack"
        )

    text = (
        f"**Which method's forgetting lasts.** Ranked by the recovered fraction of forget "
        f"log-perplexity averaged over the attack variants where the two ends differ (0 = like "
        f"the exact-retrain model, 1 = back to the model before unlearning), the forgetting of "
        f"**{best}** lasts best ({describe(best)})"
    )
    text += f" and that of **{worst}** least ({describe(worst)})." if worst != best else "."
    text += " Order: " + " < ".join(f"{m} ({_cell(by[m]['mean'])})" for m in rank) + "."
    if a["strongest_attack"]:
        v = a["strongest_attack"]
        text += (
            f" The strongest attack is {_label(v)} (mean fraction over methods "
            f"{_cell(a['by_variant'][v])})."
        )
    q = [v for v in a["by_variant"] if v.startswith("quantize")]
    if q:
        text += (
            " Quantization: "
            + ", ".join(f"{_label(v)} {_cell(a['by_variant'][v])}" for v in q)
            + " (mean fraction over methods; at the stop, before any attack, "
        )
        text += _cell(mean_of([by[m]["at_stop"] for m in by])) + ")."
    if a["na_ends"]:
        text += (
            " n/a (ends within each other's bootstrap interval) for "
            + ", ".join(_label(v) for v in a["na_ends"])
            + "."
        )
    text += "\n\n**Does the ranking change?** "
    gd = "GA+GD in-dist"
    what = {
        "robustness": "robustness to learning rate and steps (its question (a), the paper's "
        "finding: worst utility cost over the grid, best first)",
        "tradeoff": "forget / utility trade-off at the stop (its question (c): lowest utility "
        "cost first)",
    }
    compared = a["compared_with_quality"]
    for kind, c in compared.items():
        text += (
            f"The quality benchmark ranks the methods run in both by {what[kind]} as "
            + " > ".join(c["quality"])
            + "; by lasting forgetting here: "
            + " > ".join(c["here"])
            + " — "
            + ("the same order. " if c["same_order"] else "the order changes. ")
        )
    if not compared:
        text += (
            "The quality benchmark's rankings (docs/results.json) do not cover two of these "
            "methods, so only the paper's finding is compared."
        )
    text = text.rstrip()
    if gd in rank:
        pos = rank.index(gd) + 1
        text += (
            f" The paper's most robust method, GA+GD on in-distribution data, ranks {pos} of "
            f"{len(rank)} for lasting forgetting"
            + (
                ", so its lead holds against these attacks."
                if pos == 1
                else f" ({describe(gd)}), so robustness to hyper-parameters does not mean lasting "
                "forgetting here."
            )
        )
    return text


def render(results: dict) -> str:
    p, s, o = results["provenance"], results["settings"], results["options"]
    analysis = results["analysis"]
    ends, fractions = analysis["ends"], analysis["fractions"]
    methods = [m for m in results["methods"] if m in fractions]
    order = [v for v in variant_order(results) if v in ends]
    done = sum(len(results["models"].get(k, {}).get("variants", {})) for k in results["models"])
    lines = [
        "## Does it stay forgotten? Relearning and quantization attacks",
        "",
        "Generated by `python benchmarks/robustness.py` (see `benchmarks/README.md`). "
        + common.provenance_line(p),
        "",
    ]
    if not results.get("complete"):
        left = [
            k
            for k in ["B", "R", *results["methods"]]
            if not results["models"].get(k, {}).get("variants")
        ]
        lines += [
            f"**Partial results** ({done} model × attack scorings so far; models left: "
            f"{', '.join(left) or 'none'}; `python benchmarks/robustness.py --resume` "
            "continues): methods or rows missing below were not measured yet.",
            "",
        ]
    if results.get("total_seconds"):
        lines += [
            f"**Time.** {results['total_seconds'] / 60:.0f} min over every invocation so far.",
            "",
        ]
    lines += [
        f"**Setup.** The demo task (windows of {s['max_length']} tokens). Each method unlearns "
        f"the seen model **B** at lr {o['unlearn_lr']:g} (constant, batch "
        f"{s['unlearn_batch_size']}) up to the approximate-retrain stop (forget ppl ≥ "
        f"{1 - o['tolerance']:.2f} × B's approximate ppl, checked every step, at most "
        f"{o['max_unlearn_steps']} steps"
        + _document_stop_text(results)
        + "); the unlearned model **U**, B and the exact-retrain "
        "model **R** then go through the same attacks. Relearning: AdamW at lr "
        f"{o['relearn_lr']:g} (constant, full fine-tuning, batch {o['relearn_batch_size']}) for "
        f"k = {', '.join(map(str, o['relearn_steps']))} steps on "
        + " / ".join(
            "a held-out " + f"{o['slice_fraction']:.0%} of the forget documents "
            f"({len(results['slice']['slice'])} of "
            f"{len(results['slice']['slice']) + len(results['slice']['rest'])}: only the "
            "other documents are scored)"
            if d == "forget_slice"
            else f"{d} text"
            for d in o["relearn_data"]
        )
        + ". Quantization: weight-only round-to-nearest, "
        f"{' and '.join(str(b) for b in o['bits'])} bits, one scale and zero point per group of "
        f"{o['group_size']} input weights, every linear layer; "
        + _quantization_text(results)
        + f" Scores on {', '.join(o['eval_splits'])} (every window unless noted: "
        f"eval_subset {o['eval_chunks']}).",
        "",
        "**Reading the table.** Each cell: recovered fraction of forget log-perplexity / of the "
        "loss-attack MIA AUC, (m(U_att) − m(R_att)) / (m(B_att) − m(R_att)): 0 = like the "
        "exact-retrain model, 1 = the attack brought the forget set all back; not clipped. "
        f"**n/a**: the {o['confidence']:.0%} paired bootstrap interval ({o['resamples']} "
        "resamples over documents) of m(B_att) − m(R_att) contains 0 — the attack left the two "
        "ends indistinguishable. The last two columns are the ends' own values after the same "
        "attack (forget log-ppl / AUC).",
        "",
    ]

    def pair(values: dict | None, key: str) -> str:  # forget log-ppl / AUC
        return (
            "—"
            if values is None
            else " / ".join(_cell(values.get(k, {}).get(key)) for k in TABLE_METRICS)
        )

    header = ["attack", *methods, "B (before)", "R (exact retrain)"]
    rows = [
        [
            _label(v),
            *(pair(fractions[m].get(v), "fraction") for m in methods),
            pair(ends[v], "before"),
            pair(ends[v], "retrain"),
        ]
        for v in order
    ]
    lines += common.markdown_table(header, rows)
    lines += ["", _answer(results), ""]
    if results.get("plot"):
        lines += [f"![recovered fraction per attack]({results['plot']})", ""]
    lines += [
        "<details><summary>Unlearning runs and the unlearned models' own values</summary>",
        "",
    ]
    header = ["method", "stop step", "reached", "train s"]
    header += [f"{_label(v)}: forget ppl / AUC" for v in order]
    rows = []
    for m in methods:
        info = results["models"][m].get("unlearning", {})
        variants = results["models"][m].get("variants", {})
        vals = [
            " / ".join(
                _cell(variants.get(v, {}).get("scored", {}).get(k))
                for k in ("forget/ppl", "mia/loss_auc")
            )
            if v in variants
            else "—"
            for v in order
        ]
        reached = "yes" if info.get("reached_target") else "no"
        stop = info.get("stopped_step") or info.get("steps")
        rows.append([m, stop, reached, common.fmt(info.get("train_seconds"), 0), *vals])
    lines += [*common.markdown_table(header, rows), "", "</details>", ""]
    total = results.get("total_seconds")
    if total:
        took = f"{total / 60:.0f} min" if total >= 120 else f"{total:.0f} s"
        lines += [
            f"Time: {took} for {done} model × attack scorings and "
            f"{sum(1 for k in results['models'] if k not in ENDS)} unlearning runs, "
            f"{o.get('threads')} torch thread(s).",
            "",
        ]
    return "\n".join(lines)


def _document_stop_text(results: dict) -> str:
    """The per-document rows' own stop (#27), named with their tolerance."""
    rows = {
        m: results["models"][m]["unlearning"]["document_targets"]
        for m in results.get("methods", [])
        if "document_targets" in (results["models"].get(m, {}).get("unlearning") or {})
    }
    if not rows:
        return ""
    named = ", ".join(f"{m} (tolerance {t['tolerance']:.3f} nats)" for m, t in rows.items())
    return (
        f"; per-document rows stop instead when every forget document is inside its band or "
        f"the share inside and the distance to the bands stop improving: {named}"
    )


def _quantization_text(results: dict) -> str:
    o = results["options"]
    q = next((e["quantization"] for e in results["models"].values() if e.get("quantization")), None)
    tied = q is not None and any(
        str(why).startswith("tied") for why in (q.get("skipped") or {}).values()
    )
    if o["include_embeddings"]:
        head = "the input embedding matrix is quantized too" + (
            " (once, with the output layer tied to it)." if tied else "."
        )
    elif tied:
        head = (
            "the input embeddings and the output layer, which this model ties to them, stay "
            "in full precision, as GPTQ/AWQ/bitsandbytes deploy them."
        )
    else:
        head = (
            "the input embeddings and the output layer (lm_head) stay in full precision, as "
            "GPTQ/AWQ/bitsandbytes deploy them."
        )
    if q:
        head += f" {q.get('layers_quantized')} linear layers quantized."
    return head


def write(results: dict, json_path: Path, md_path: Path, *, render_markdown: bool) -> None:
    """Analyse and write the JSON; with ``render_markdown`` the plot and the section too."""
    results["quality_rankings"] = quality_rankings(Path(results["options"]["quality_json"]))
    results["analysis"] = analyse(results)
    if render_markdown:
        results["plot"] = plot(results, md_path.parent)
        common.write_json(json_path, results)
        common.replace_section(md_path, "robustness", render(results), title="Results")
    else:
        common.write_json(json_path, results)
