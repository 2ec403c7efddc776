"""Does it stay forgotten? Relearning and quantization attacks on unlearned models (demo task).

The demo task (``common.DemoTask``): SmolLM2-135M-Instruct after continued pre-training on the demo
corpus is the model before unlearning (**B**, ``task.seen_dir``); the same continued pre-training
without the forget set is the exact-retrain model (**R**, ``task.exact_dir``). Both come from the
demo's cache. Each method unlearns B through the library's workflow
(``UnlearningWorkflow.run(..., halt=True, tolerance=0.05)``) up to the approximate-retrain stop
(forget perplexity >= 0.95 x B's approximate perplexity, checked after every step), at the demo's
learning rate (7e-5, constant, AdamW, no warm-up; ``--unlearn-lr``) and batch size: the unlearned
model **U** stays in memory.

Then U, B and R each go through every attack variant (``lightning_unlearn.attacks``), each
attacked copy is scored on the same documents, and the scores (not the models) are kept:

* ``relearn_retain_k{1,2,4,8}``: fine-tune a copy for k steps on retain text (AdamW, constant
  ``--relearn-lr``, default the demo's unlearning rate 7e-5, so k relearning steps are as large as
  k unlearning steps; batch = the unlearning batch);
* ``relearn_forget_slice_k{1,2,4,8}``: the same on a held-out 25% of the forget documents
  (``forget_slice``, seed 0); only the **rest** of the forget set is scored (the slice is
  excluded from every forget metric; ``relearn_forget_slice_k0`` is the unattacked model on the
  rest, computed from the ``none`` scores);
* ``quantize_{8,4}bit``: weight-only round-to-nearest quantization of every linear layer, one
  scale and integer zero point per group of 64 input weights. The input embeddings and the output
  layer, which SmolLM2 ties to them, stay in full precision (as GPTQ/AWQ/bitsandbytes deploy it;
  ``--include-embeddings`` quantizes the shared matrix once);
* ``none``: the model as it is.

Scores: perplexity per split, the four membership-inference AUCs (forget vs approximate) and the
forward-pass memorisation scores (exact memorisation, extraction strength) of the forget set. For
each metric, the recovered fraction ``(m(U_att) - m(R_att)) / (m(B_att) - m(R_att))`` (0 = like
the exact-retrain model, 1 = the attack brought it all back), "n/a" when the 95% paired bootstrap
interval of ``m(B_att) - m(R_att)`` over documents contains 0 (``attacks.recovery``).

Methods (``--methods``): GA; GA+GD and GA+KL with in-distribution retain data (the paper's);
NPO with an NLL retain term (beta 0.1); SimNPO (beta 2.5, delta 0, the paper's TOFU values)
without its NLL retain term: at the seen model's forget NLL (~1.97 nats/token) SimNPO's
per-sequence weight 2 * (1 - sigmoid(beta * NLL)) is ~0.015, so with an NLL retain term of weight 1
an update is ~98% retain fine-tuning and forget perplexity does not reach the target (Adam
normalises the forget term's small scale away when it is alone); UNDIAL (strength 10, no retain
data, full fine-tuning here instead of the paper's LoRA). RMU is not run: its steering coefficient
and layer are Zephyr-7B values that need tuning for SmolLM2, and it does not target perplexity.

Run it alone on the machine (about 75 minutes on 2 CPU cores with the defaults: ~30 s per scoring,
~7 s per relearning step, 2-3 min per unlearning; progress lines and partial results as it goes)::

    python benchmarks/robustness.py                  # benchmarks/results/robustness.json, docs/results.md
    python benchmarks/robustness.py --resume         # go on after an interruption
    python benchmarks/robustness.py --render-only    # re-render the section and plot from the JSON
    python benchmarks/robustness.py --smoke --model <tiny model dir> --json /tmp/r.json --markdown /tmp/r.md
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

#: (name, class name, retain data for training, class kwargs); names as in ``quality.py``
METHODS: tuple[tuple[str, str, str | None, dict], ...] = (
    ("GA", "GradientAscent", None, {}),
    ("GA+GD in-dist", "GradientAscentDescent", "retain", {}),
    ("GA+KL in-dist", "GradientAscentKL", "retain", {}),
    ("NPO+GD in-dist", "NegativePreferenceOptimization", "retain", {"retain_term": "nll"}),
    ("SimNPO", "SimNPO", None, {"retain_term": "none"}),
    ("UNDIAL", "UNDIAL", None, {}),
)
#: the two ends of the scale: the model before unlearning and the exact-retrain model
ENDS = {"B": "before unlearning (B)", "R": "exact retrain (R)"}
#: metrics in the table and the plot: forget log-perplexity and the loss attack's AUC
TABLE_METRICS = ("forget/nll", "mia/loss_auc")
METRIC_LABELS = {"forget/nll": "forget log-ppl", "mia/loss_auc": "MIA AUC (loss)"}
#: per-document columns kept in the JSON (for the bootstrap and for re-analysis)
SPLITS_KEPT = ("forget", "approximate")
SLICE_BASE = "relearn_forget_slice_k0"

# rough costs on the recorded 2-core machine, for the plan printed at the start
EST_SCORING_S, EST_RELEARN_STEP_S, EST_UNLEARN_S, EST_QUANTIZE_S = 30.0, 7.0, 150.0, 5.0


def scoring_metrics() -> list:
    """What every model is scored with: perplexity per split, the four MIA attacks, and the
    forward-pass memorisation scores (no text generation: it would dominate the run on CPU)."""
    from lightning_unlearn.evaluation import MembershipInference, Memorisation, Perplexity

    return [Perplexity(), MembershipInference(), Memorisation()]


# ----------------------------------------------------------------------------------- scoring
def _g7(value: Any) -> Any:
    v = common.finite(value)
    return None if v is None else float(f"{v:.7g}")


def record_of(measurement, tokens: dict[int, int], excluded: set[int], seconds: float) -> dict:
    """What is kept of one scored model: flat values, the values on the scored documents (the
    forget metrics without ``excluded``), and the per-document values of forget / approximate."""
    from lightning_unlearn.attacks import rescore

    scored = rescore(measurement.documents, tokens, exclude=excluded)
    forget_docs = [int(d) for d in measurement.documents["forget"]["doc_index"]]
    kept = [d for d in forget_docs if d not in excluded]
    if set(kept) & excluded or scored["forget/documents"] != len(kept):  # asserted, as asked
        raise AssertionError("a relearned slice document is among the scored documents")
    return {
        "excluded": sorted(excluded),
        "scored_forget": kept,
        "values": {k: _g7(v) for k, v in measurement.values.items()},
        "scored": {k: _g7(v) for k, v in scored.items()},
        "documents": {
            s: {c: [_g7(x) if c != "doc_index" else int(x) for x in v] for c, v in cols.items()}
            for s, cols in measurement.documents.items()
            if s in SPLITS_KEPT
        },
        "seconds": seconds,
    }


def derived_record(none: dict, tokens: dict[int, int], excluded: set[int]) -> dict:
    """The unattacked model on the rest of the forget set, from its ``none`` record (no pass)."""
    from lightning_unlearn.attacks import rescore

    scored = rescore(none["documents"], tokens, exclude=excluded)
    return {
        **none,
        "excluded": sorted(excluded),
        "scored_forget": [d for d in none["scored_forget"] if d not in excluded],
        "scored": {k: _g7(v) for k, v in scored.items()},
        "derived_from": "none",
        "seconds": 0.0,
    }


class Progress:
    """Progress lines with the elapsed time and a rough estimate of what is left."""

    def __init__(self, planned_scorings: int, planned_unlearning: int, started: float) -> None:
        self.left_scorings, self.left_unlearning = planned_scorings, planned_unlearning
        self.scoring_s: list[float] = []
        self.unlearn_s: list[float] = []
        self.started = started

    def line(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.started:6.0f} s] {text}", flush=True)

    def scored(self, seconds: float) -> None:
        self.scoring_s.append(seconds)
        self.left_scorings = max(0, self.left_scorings - 1)

    def unlearned(self, seconds: float) -> None:
        self.unlearn_s.append(seconds)
        self.left_unlearning = max(0, self.left_unlearning - 1)

    def left(self) -> str:
        per = sum(self.scoring_s) / len(self.scoring_s) if self.scoring_s else EST_SCORING_S
        unl = sum(self.unlearn_s) / len(self.unlearn_s) if self.unlearn_s else EST_UNLEARN_S
        return f"~{(self.left_scorings * per + self.left_unlearning * unl) / 60:.0f} min left"


def attack_model(
    key: str,
    model,
    attacks: list,
    data,
    tokens: dict[int, int],
    entry: dict,
    *,
    scorer,
    progress: Progress,
    save,
    none_measurement=None,
) -> None:
    """Score ``model`` as it is and under every attack variant into ``entry["variants"]``
    (skipping variants already there), saving after each."""
    variants = entry.setdefault("variants", {})

    def keep(name: str, measurement, excluded: set[int], seconds: float) -> None:
        variants[name] = record_of(measurement, tokens, excluded, seconds)
        s = variants[name]["scored"]
        progress.scored(seconds)
        progress.line(
            f"{key:15s} {name:26s} forget ppl {common.fmt(s.get('forget/ppl'))}, "
            f"loss AUC {common.fmt(s.get('mia/loss_auc'))} ({seconds:.0f} s; {progress.left()})"
        )
        save()

    if "none" not in variants:
        t = time.perf_counter()
        measurement = none_measurement or scorer.measure_checkpoint(model, data)
        keep("none", measurement, set(), time.perf_counter() - t)
    for attack in attacks:
        names = attack.variant_names()
        if all(n in variants for n in names):
            if getattr(attack, "data", None) == "forget_slice":
                variants.setdefault(
                    SLICE_BASE, derived_record(variants["none"], tokens, attack.excluded(data))
                )
            continue
        if getattr(attack, "data", None) == "forget_slice":
            variants[SLICE_BASE] = derived_record(variants["none"], tokens, attack.excluded(data))
        t = time.perf_counter()
        for name, attacked, excluded in attack.variants(model, data):
            if name in variants:
                t = time.perf_counter()
                continue
            measurement = scorer.measure_checkpoint(attacked, data)
            keep(name, measurement, excluded, time.perf_counter() - t)
            if name.startswith("quantize") and "quantization" not in entry:
                report = getattr(attacked, "quantization_report", {})
                entry["quantization"] = {
                    k: report.get(k) for k in ("group_size", "layers_quantized", "skipped")
                }
                entry["quantization"]["parameters_quantized"] = report.get("parameters_quantized")
            del attacked
            t = time.perf_counter()  # relearning's next steps count towards the next variant
        gc.collect()


# ----------------------------------------------------------------------------------- unlearning
def unlearn(task, method: tuple, *, lr: float, max_steps: int, tolerance: float, target: float,
            before, data_options: dict) -> tuple[Any, Any, dict]:  # fmt: skip
    """Unlearn the seen model with one method up to the approximate-retrain stop; returns the
    unlearned network, its ``after`` measurement and what happened."""
    import lightning as L

    import lightning_unlearn
    from lightning_unlearn.demo import cpu_trainer
    from lightning_unlearn.methods import DivergenceError
    from lightning_unlearn.workflow import UnlearningWorkflow

    name, cls_name, retain, kwargs = method
    L.seed_everything(task.settings.seed, verbose=False)
    data = task.data(retain=retain, **data_options)
    module = getattr(lightning_unlearn, cls_name)(
        str(task.seen_dir), learning_rate=lr, warmup_ratio=0.0, scheduler="constant", **kwargs
    )
    workflow = UnlearningWorkflow(
        metrics=scoring_metrics(), target_ppl=target, tolerance=tolerance, halt=True,
        checks="fixed", verbose=False,  # every step, as the stored rows were checked
    )  # fmt: skip
    trainer = cpu_trainer(
        max_steps=max_steps, max_epochs=-1, val_check_interval=1, check_val_every_n_epoch=None,
        callbacks=[workflow],
    )  # fmt: skip
    started = time.perf_counter()
    diverged = None
    try:
        workflow.run(trainer, module, data, before=before, export=False)
    except DivergenceError as err:
        diverged = str(err).split(";")[0]
    stopped = workflow.stop.stopped_step if workflow.stop is not None else None
    info = {
        "method": name,
        "class": cls_name,
        "retain_data": retain,
        "kwargs": kwargs,
        "learning_rate": lr,
        "steps": int(trainer.global_step),
        "stopped_step": stopped,
        "reached_target": stopped is not None,
        "diverged": diverged,
        "train_seconds": workflow.train_seconds,
        "wall_seconds": time.perf_counter() - started,
        "checks": [{"step": c["step"], "forget_ppl": c["ppl"]} for c in workflow.checks],
    }
    model = module.model
    module.model = None
    module.reference = None
    del module, trainer
    gc.collect()
    return (None if diverged else model), workflow.after, info


# ----------------------------------------------------------------------------------- analysis
def _variant_order(results: dict) -> list[str]:
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
    order = _variant_order(results)
    ends: dict[str, dict[str, Any]] = {}
    for variant in order:
        b, r = b_variants.get(variant), r_variants.get(variant)
        if b is None or r is None:
            continue
        ends[variant] = {}
        for metric in FRACTION_METRICS:
            if b["scored"].get(metric) is None and r["scored"].get(metric) is None:
                continue
            key = json.dumps([variant, metric, b["scored"].get(metric), r["scored"].get(metric),
                              b["excluded"], opts["resamples"], opts["confidence"]])  # fmt: skip
            if key not in _INTERVALS:  # the bootstrap runs once per variant and metric
                _INTERVALS[key] = ends_interval(
                    b["documents"], r["documents"], metric, tokens, exclude=set(b["excluded"]),
                    n_resamples=opts["resamples"], confidence=opts["confidence"], seed=0,
                )  # fmt: skip
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
                f = fraction_of(u, end["before"], end["retrain"],
                                ends_interval=interval if interval else (math.nan, math.nan))  # fmt: skip
                row[metric] = {
                    "fraction": f,
                    "unlearned": u,
                    "raw_change": common.finite(raw_change(base.get(metric), u)),
                }
            fractions[method][variant] = row
    return {"ends": ends, "fractions": fractions, "answers": answers(results, ends, fractions)}


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def answers(results: dict, ends: dict, fractions: dict) -> dict:
    """Which method's forgetting lasts (mean recovered fraction of forget log-perplexity over the
    attacked variants where the ends differ), the strongest attack, and the comparison with the
    quality benchmark's ranking and the paper's finding."""
    attacked = [v for v in _variant_order(results) if v not in ("none", SLICE_BASE)]
    by_method = {}
    for method, rows in fractions.items():
        values = {v: rows.get(v, {}).get("forget/nll", {}).get("fraction") for v in attacked}
        got = {v: f for v, f in values.items() if f is not None}
        worst = max(got, key=got.get) if got else None
        by_method[method] = {
            "mean": _mean(list(got.values())),
            "worst": got.get(worst) if worst else None,
            "worst_variant": worst,
            "scored_variants": len(got),
            "na_variants": sum(1 for v in attacked if v in rows and values[v] is None),
            "at_stop": rows.get("none", {}).get("forget/nll", {}).get("fraction"),
            "mean_auc": _mean(
                [rows.get(v, {}).get("mia/loss_auc", {}).get("fraction") for v in attacked]
            ),
        }
    ranked = sorted((m for m in by_method if by_method[m]["mean"] is not None),
                    key=lambda m: by_method[m]["mean"])  # fmt: skip
    by_variant = {
        v: _mean([fractions[m].get(v, {}).get("forget/nll", {}).get("fraction") for m in fractions])
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
        ),  # fmt: skip
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
        return {"tradeoff": list(a["c_tradeoff"]["ranking"]),
                "robustness": list(a["a_robustness"]["ranking"]), "source": str(path)}  # fmt: skip
    except (OSError, KeyError, TypeError, ValueError):
        return {}


# ----------------------------------------------------------------------------------- rendering
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
        return ("**Answer.** No recovered fraction could be computed (the two ends could not be "
                "told apart after any attack, or no method was attacked yet).")  # fmt: skip
    best, worst = rank[0], rank[-1]

    def describe(m: str) -> str:
        b = by[m]
        return (f"mean {_cell(b['mean'])} over {b['scored_variants']} attack variants, worst "
                f"{_cell(b['worst'])} after {_label(b['worst_variant'] or '')}; "
                f"{_cell(b['at_stop'])} at the stop, before any attack")  # fmt: skip

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
        text += (f" The strongest attack is {_label(v)} (mean fraction over methods "
                 f"{_cell(a['by_variant'][v])}).")  # fmt: skip
    q = [v for v in a["by_variant"] if v.startswith("quantize")]
    if q:
        text += (
            " Quantization: "
            + ", ".join(f"{_label(v)} {_cell(a['by_variant'][v])}" for v in q)
            + " (mean fraction over methods; at the stop, before any attack, "
        )
        text += _cell(_mean([by[m]["at_stop"] for m in by])) + ")."
    if a["na_ends"]:
        text += (" n/a (ends within each other's bootstrap interval) for "
                 + ", ".join(_label(v) for v in a["na_ends"]) + ".")  # fmt: skip
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
            + " > ".join(c["quality"]) + "; by lasting forgetting here: "
            + " > ".join(c["here"]) + " — "
            + ("the same order. " if c["same_order"] else "the order changes. ")
        )  # fmt: skip
    if not compared:
        text += ("The quality benchmark's rankings (docs/results.json) do not cover two of these "
                 "methods, so only the paper's finding is compared.")  # fmt: skip
    text = text.rstrip()
    if gd in rank:
        pos = rank.index(gd) + 1
        text += (
            f" The paper's most robust method, GA+GD on in-distribution data, ranks {pos} of "
            f"{len(rank)} for lasting forgetting"
            + (", so its lead holds against these attacks." if pos == 1
               else f" ({describe(gd)}), so robustness to hyper-parameters does not mean lasting "
                    "forgetting here.")
        )  # fmt: skip
    return text


def render(results: dict) -> str:
    p, s, o = results["provenance"], results["settings"], results["options"]
    analysis = results["analysis"]
    ends, fractions = analysis["ends"], analysis["fractions"]
    methods = [m for m in results["methods"] if m in fractions]
    order = [v for v in _variant_order(results) if v in ends]
    done = sum(len(results["models"].get(k, {}).get("variants", {})) for k in results["models"])
    lines = [
        "## Does it stay forgotten? Relearning and quantization attacks",
        "",
        "Generated by `python benchmarks/robustness.py` (see `benchmarks/README.md`). "
        + common.provenance_line(p),
        "",
    ]
    if not results.get("complete"):
        left = [k for k in ["B", "R", *results["methods"]]
                if not results["models"].get(k, {}).get("variants")]  # fmt: skip
        lines += [f"**Partial results** ({done} model × attack scorings so far; models left: "
                  f"{', '.join(left) or 'none'}; `python benchmarks/robustness.py --resume` "
                  "continues): methods or rows missing below were not measured yet.", ""]  # fmt: skip
    if results.get("total_seconds"):
        lines += [f"**Time.** {results['total_seconds'] / 60:.0f} min over every invocation so "
                  "far.", ""]  # fmt: skip
    lines += [
        f"**Setup.** The demo task (windows of {s['max_length']} tokens). Each method unlearns "
        f"the seen model **B** at lr {o['unlearn_lr']:g} (constant, batch "
        f"{s['unlearn_batch_size']}) up to the approximate-retrain stop (forget ppl ≥ "
        f"{1 - o['tolerance']:.2f} × B's approximate ppl, checked every step, at most "
        f"{o['max_unlearn_steps']} steps); the unlearned model **U**, B and the exact-retrain "
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
        )  # fmt: skip
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
        "| attack | " + " | ".join(methods) + " | B (before) | R (exact retrain) |",
        "|---|" + "---|" * (len(methods) + 2),
    ]
    for v in order:
        cells = []
        for m in methods:
            row = fractions[m].get(v)
            cells.append("—" if row is None else " / ".join(
                _cell(row.get(k, {}).get("fraction")) for k in TABLE_METRICS))  # fmt: skip
        b = " / ".join(_cell(ends[v].get(k, {}).get("before")) for k in TABLE_METRICS)
        r = " / ".join(_cell(ends[v].get(k, {}).get("retrain")) for k in TABLE_METRICS)
        lines.append(f"| {_label(v)} | " + " | ".join(cells) + f" | {b} | {r} |")
    lines += ["", _answer(results), ""]
    if results.get("plot"):
        lines += [f"![recovered fraction per attack]({results['plot']})", ""]
    lines += [
        "<details><summary>Unlearning runs and the unlearned models' own values</summary>",
        "",
        "| method | stop step | reached | train s | "
        + " | ".join(f"{_label(v)}: forget ppl / AUC" for v in order)
        + " |",  # fmt: skip
        "|---|---|---|---|" + "---|" * len(order),
    ]
    for m in methods:
        info = results["models"][m].get("unlearning", {})
        variants = results["models"][m].get("variants", {})
        vals = [
            " / ".join(_cell(variants.get(v, {}).get("scored", {}).get(k))
                       for k in ("forget/ppl", "mia/loss_auc")) if v in variants else "—"
            for v in order
        ]  # fmt: skip
        lines.append(
            f"| {m} | {info.get('stopped_step') or info.get('steps')} | "
            f"{'yes' if info.get('reached_target') else 'no'} | "
            f"{common.fmt(info.get('train_seconds'), 0)} | " + " | ".join(vals) + " |"
        )
    lines += ["", "</details>", ""]
    total = results.get("total_seconds")
    if total:
        took = f"{total / 60:.0f} min" if total >= 120 else f"{total:.0f} s"
        lines += [f"Time: {took} for {done} model × attack scorings and "
                  f"{sum(1 for k in results['models'] if k not in ENDS)} unlearning runs, "
                  f"{o.get('threads')} torch thread(s).", ""]  # fmt: skip
    return "\n".join(lines)


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
        head = ("the input embeddings and the output layer, which this model ties to them, stay "
                "in full precision, as GPTQ/AWQ/bitsandbytes deploy them.")  # fmt: skip
    else:
        head = ("the input embeddings and the output layer (lm_head) stay in full precision, as "
                "GPTQ/AWQ/bitsandbytes deploy them.")  # fmt: skip
    if q:
        head += f" {q.get('layers_quantized')} linear layers quantized."
    return head


# ----------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="base model folder (default: SmolLM2 from GGUF)")
    p.add_argument("--smoke", action="store_true", help="tiny settings for a test (needs --model)")
    p.add_argument("--methods", nargs="+", default=None,
                   help=f"subset of {[m[0] for m in METHODS]} (default: all)")  # fmt: skip
    p.add_argument("--unlearn-lr", type=float, default=None,
                   help="unlearning learning rate (default: the demo's, 7e-5)")  # fmt: skip
    p.add_argument("--max-unlearn-steps", type=int, default=None,
                   help="give up on the stop after this many steps (default: 3 epochs)")  # fmt: skip
    p.add_argument("--tolerance", type=float, default=0.05, help="the stop's tolerance")
    p.add_argument("--relearn-data", nargs="+", default=["retain", "forget_slice"],
                   choices=["retain", "general", "forget_slice"])  # fmt: skip
    p.add_argument("--relearn-steps", nargs="+", type=int, default=None,
                   help="relearning step counts scored (default 1 2 4 8)")  # fmt: skip
    p.add_argument("--relearn-lr", type=float, default=None,
                   help="relearning learning rate (default: the unlearning rate)")  # fmt: skip
    p.add_argument("--slice-fraction", type=float, default=0.25)
    p.add_argument("--bits", nargs="+", type=int, default=[8, 4])
    p.add_argument("--group-size", type=int, default=64)
    p.add_argument("--include-embeddings", action="store_true",
                   help="quantize the (tied) embeddings too")  # fmt: skip
    p.add_argument("--eval-splits", nargs="+", default=["forget", "approximate", "general"],
                   help="splits scored (forget and approximate are needed)")  # fmt: skip
    p.add_argument("--eval-chunks", type=int, default=None,
                   help="score at most this many windows per split (default: all)")  # fmt: skip
    p.add_argument("--eval-batch-size", type=int, default=8)
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--confidence", type=float, default=0.95, help="bootstrap interval coverage")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cache-dir", default=None, help="demo cache (default: the demo's)")
    p.add_argument(
        "--json", default=str(common.ROOT / "benchmarks" / "results" / "robustness.json")
    )
    p.add_argument("--markdown", default=str(common.ROOT / "docs" / "results.md"))
    p.add_argument("--quality-json", default=str(common.ROOT / "docs" / "results.json"),
                   help="the quality benchmark's results, for the ranking comparison")  # fmt: skip
    p.add_argument("--resume", action="store_true", help="reuse the scores already in --json")
    common.add_budget_argument(p)
    p.add_argument("--render-only", action="store_true", help="re-render from --json")
    return p


def _finish(results: dict, json_path: Path, md_path: Path, *, render_markdown: bool) -> None:
    results["quality_rankings"] = quality_rankings(Path(results["options"]["quality_json"]))
    results["analysis"] = analyse(results)
    if render_markdown:
        results["plot"] = plot(results, md_path.parent)
        common.write_json(json_path, results)
        common.replace_section(md_path, "robustness", render(results), title="Results")
    else:
        common.write_json(json_path, results)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    json_path, md_path = Path(args.json), Path(args.markdown)
    if args.render_only:
        results = json.loads(json_path.read_text())
        _finish(results, json_path, md_path, render_markdown=True)
        print(f"rendered {md_path} from {json_path}", flush=True)
        return 0
    from lightning_unlearn.demo import DemoSettings, quiet

    quiet()
    threads = common.set_threads(args.threads)
    table = {m[0]: m for m in METHODS}
    if args.smoke:
        if not args.model:
            raise SystemExit("--smoke needs --model <tiny model folder>")
        settings = common.smoke_settings(args.cache_dir or json_path.parent / "robustness-cache")
        methods = args.methods or ["GA", "GA+GD in-dist"]
        steps, unlearn_lr, max_steps = args.relearn_steps or [1, 2], args.unlearn_lr or 1e-3, 3
        resamples = min(args.resamples, 200)
    else:
        settings = DemoSettings(**({"cache_dir": args.cache_dir} if args.cache_dir else {}))
        methods = args.methods or list(table)
        steps, unlearn_lr = (
            args.relearn_steps or [1, 2, 4, 8],
            args.unlearn_lr or settings.unlearn_lr,
        )
        max_steps, resamples = None, args.resamples
    unknown = set(methods) - set(table)
    if unknown:
        raise SystemExit(f"unknown methods {sorted(unknown)}; choose from {list(table)}")
    splits = list(dict.fromkeys(args.eval_splits))
    if not {"forget", "approximate"} <= set(splits):
        raise SystemExit("--eval-splits must include forget and approximate (the MIA needs both)")
    if "general" in args.relearn_data and "general" not in splits:
        raise SystemExit("relearning on general text needs 'general' in --eval-splits")

    from lightning_unlearn.attacks import QuantizeAttack, RelearnAttack, document_target_counts
    from lightning_unlearn.models import load_causal_lm
    from lightning_unlearn.workflow import Measurement, UnlearningWorkflow

    started = time.perf_counter()
    task = common.DemoTask.build(settings, base_model=args.model)
    data_options = {"eval_splits": splits, "eval_batch_size": args.eval_batch_size,
                    "eval_subset": args.eval_chunks}  # fmt: skip
    data = task.data(retain="retain", **data_options)
    data.setup("fit")
    epoch_steps = math.ceil(len(data.train_dataset("forget")) / settings.unlearn_batch_size)
    max_steps = args.max_unlearn_steps or max_steps or 3 * epoch_steps
    relearn_lr = args.relearn_lr or unlearn_lr
    attacks: list[Any] = [
        RelearnAttack(steps=tuple(steps), data=d, slice_fraction=args.slice_fraction,
                      learning_rate=relearn_lr, seed=settings.seed)
        for d in args.relearn_data
    ]  # fmt: skip
    attacks.append(QuantizeAttack(bits=tuple(args.bits), group_size=args.group_size,
                                  include_embeddings=args.include_embeddings))  # fmt: skip
    the_slice, rest = RelearnAttack(slice_fraction=args.slice_fraction, seed=settings.seed).split(
        data
    )
    tokens = document_target_counts(data, "forget")
    options = {
        "unlearn_lr": unlearn_lr, "max_unlearn_steps": max_steps, "tolerance": args.tolerance,
        "relearn_data": list(args.relearn_data), "relearn_steps": sorted(set(steps)),
        "relearn_lr": relearn_lr, "relearn_batch_size": settings.unlearn_batch_size,
        "slice_fraction": args.slice_fraction, "bits": list(args.bits),
        "group_size": args.group_size, "include_embeddings": args.include_embeddings,
        "eval_splits": splits, "eval_chunks": args.eval_chunks,
        "eval_batch_size": args.eval_batch_size, "resamples": resamples,
        "confidence": args.confidence, "quality_json": args.quality_json, "threads": threads,
    }  # fmt: skip
    scoring_key = {k: options[k] for k in ("unlearn_lr", "tolerance", "relearn_lr",
                   "relearn_batch_size", "slice_fraction", "group_size", "include_embeddings",
                   "eval_splits", "eval_chunks")}  # fmt: skip
    previous = None
    if args.resume and json_path.exists():
        previous = json.loads(json_path.read_text())
        if previous.get("scoring_key") != json.loads(json.dumps(scoring_key)) or previous.get(
            "settings"
        ) != json.loads(json.dumps(dataclasses.asdict(settings), default=str)):
            raise SystemExit(
                f"--resume: {json_path} was written with other settings "
                f"({previous.get('scoring_key')}); drop --resume or use another --json"
            )
    results: dict[str, Any] = {
        "provenance": common.provenance(),
        "settings": dataclasses.asdict(settings),
        "options": options,
        "scoring_key": scoring_key,
        "model": str(task.seen_dir),
        "exact_model": str(task.exact_dir),
        "methods": methods,
        "slice": {"slice": the_slice, "rest": rest},
        "forget_tokens": {str(k): v for k, v in sorted(tokens.items())},
        "models": (previous or {}).get("models", {}),
        "complete": False,
        "total_seconds": (previous or {}).get("total_seconds", 0.0),
    }
    prior_seconds = results["total_seconds"]
    n_variants = 1 + sum(len(a.variant_names()) for a in attacks)
    todo = [k for k in ["B", "R", *methods]
            if len(results["models"].get(k, {}).get("variants", {}))
            < n_variants + ("forget_slice" in args.relearn_data)]  # fmt: skip
    relearn_steps = max(steps) * len(args.relearn_data) * len(todo)
    estimate = (len(todo) * n_variants * EST_SCORING_S + relearn_steps * EST_RELEARN_STEP_S
                + sum(1 for k in todo if k in methods) * EST_UNLEARN_S
                + len(todo) * len(args.bits) * EST_QUANTIZE_S)  # fmt: skip
    progress = Progress(len(todo) * n_variants, sum(1 for k in todo if k in methods), started)
    progress.line(
        f"plan: {len(todo)} models ({', '.join(todo) or 'none left'}) x {n_variants} scorings "
        f"(none + {', '.join(n for a in attacks for n in a.variant_names())}); forget slice "
        f"{the_slice} of {len(the_slice) + len(rest)} documents; one epoch = {epoch_steps} steps"
        + ("" if args.smoke else f"; about {estimate / 60:.0f} min on 2 cores")
    )

    def save(render_markdown: bool = False) -> None:
        results["total_seconds"] = prior_seconds + time.perf_counter() - started
        _finish(results, json_path, md_path, render_markdown=render_markdown)

    scorer = UnlearningWorkflow(metrics=scoring_metrics(), verbose=False)
    # a unit is one model with every attack on it; each is in --json when it ends
    budget, units = common.Budget(args.budget_minutes), iter(range(len(todo)))

    def out_of_budget() -> bool:
        done = next(units)
        if done and budget.spent():
            save(render_markdown=True)
            progress.line(budget.stop_line(done, len(todo) - done, "robustness.py"))
            return True
        return False

    before = None
    for key, path in (("B", task.seen_dir), ("R", task.exact_dir)):
        entry = results["models"].setdefault(key, {"label": ENDS[key], "path": str(path)})
        if key in todo:
            if out_of_budget():
                return 0
            model = load_causal_lm(str(path)).eval()
            attack_model(key, model, attacks, data, tokens, entry, scorer=scorer,
                         progress=progress, save=save)  # fmt: skip
            del model
            gc.collect()
            save(render_markdown=True)
        if key == "B":  # B's scores before unlearning: every method's "before" and its target
            values = entry["variants"]["none"]["values"]
            before = Measurement({k: v for k, v in values.items() if v is not None})
    target = before.values["approximate/ppl"] if before is not None else None
    results["target_ppl"] = target
    for name in methods:
        if name not in todo:
            continue
        if out_of_budget():
            return 0
        entry = results["models"].setdefault(name, {"label": name})
        progress.line(f"{name}: unlearning at lr {unlearn_lr:g} up to the stop (target "
                      f"{target:.3f}, at most {max_steps} steps)")  # fmt: skip
        t = time.perf_counter()
        model, after, info = unlearn(
            task, table[name], lr=unlearn_lr, max_steps=max_steps, tolerance=args.tolerance,
            target=target, before=before, data_options=data_options,
        )  # fmt: skip
        progress.unlearned(time.perf_counter() - t)
        entry["unlearning"] = info
        if info["reached_target"]:
            outcome = f"stopped at step {info['stopped_step']}"
        else:
            outcome = f"target not reached in {info['steps']} steps"
        if info["diverged"]:
            outcome += f", diverged ({info['diverged']}): not attacked"
        progress.line(f"{name}: {outcome} ({info['wall_seconds']:.0f} s)")
        if model is None:
            save(render_markdown=True)
            continue
        attack_model(name, model, attacks, data, tokens, entry, scorer=scorer,
                     progress=progress, save=save, none_measurement=after)  # fmt: skip
        del model
        gc.collect()
        save(render_markdown=True)
    results["complete"] = True
    save(render_markdown=True)
    progress.line(f"wrote {json_path} and {md_path} ({results['total_seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
