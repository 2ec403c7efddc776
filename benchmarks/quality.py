"""Unlearning quality on the demo task: every method x learning rates x step budgets.

The demo task: SmolLM2-135M-Instruct after continued pre-training on the demo corpus (forget +
retain code from the standard library) is the model to unlearn (``seen``); the same continued
pre-training without the forget set is the exact-retrain model. Both come from the demo's cache
(``lightning_unlearn.demo``), so nothing is trained twice.

For the paper's seven methods (GA, RL, AS, GA+GD and GA+KL with in-distribution or general retain
data), plus NPO with an NLL retain term, and each learning rate, one run trains with a constant
learning rate up to the largest step budget. Because the schedule is constant, the model after
``k`` steps of that run *is* the ``k``-step run: every budget is scored inside the same run. For
each run it records

* per-split perplexity and the four membership-inference AUCs at every budget;
* whether forget perplexity reached the approximate-retrain target (the seen model's approximate
  perplexity), checked every ``--check-every`` steps on the forget split; the first check that
  reaches it is scored in full (the "stop" point, what ``ApproximateRetrainStopping`` would return);
* the distance of its forget / approximate / retain perplexities to the exact-retrain model's;
* training seconds (evaluation excluded) and tokens.

GA and GA+GD (in-distribution) at ``--ttf-lr`` also run one full epoch, the paper's fixed schedule,
for the time-to-forget comparison (against the continued pre-training's time, measured here).

Run (about 20-25 minutes on 2 CPU cores with the defaults)::

    python benchmarks/quality.py                       # writes docs/results.{json,md} + plots
    python benchmarks/quality.py --render-only         # re-render the markdown from the JSON
    python benchmarks/quality.py --smoke --model <tiny model dir> --json /tmp/q.json  # seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

log = logging.getLogger("benchmarks.quality")

SPLITS = ("forget", "approximate", "retain", "general")
DIST_SPLITS = ("forget", "approximate", "retain")
MIA = ("loss", "zlib", "min_k", "min_k_plus_plus")

#: the paper's seven methods, NPO and the 2025 methods: (name, class name, retain data for
#: training, class kwargs)
METHODS: tuple[tuple[str, str, str | None, dict], ...] = (
    ("GA", "GradientAscent", None, {}),
    ("RL", "RandomLabels", None, {}),
    ("AS", "AdversarialSamples", None, {}),
    ("GA+GD in-dist", "GradientAscentDescent", "retain", {}),
    ("GA+GD general", "GradientAscentDescent", "general", {}),
    ("GA+KL in-dist", "GradientAscentKL", "retain", {}),
    ("GA+KL general", "GradientAscentKL", "general", {}),
    # not in the paper: NPO (Zhang et al. 2024) with the NLL retain term, the usual baseline since
    ("NPO+GD in-dist", "NegativePreferenceOptimization", "retain", {"retain_term": "nll"}),
    # 2025 methods (open-unlearning ships them): their papers' defaults, in-distribution retain data
    ("WGA in-dist", "WeightedGradientAscent", "retain", {}),
    ("SatImp in-dist", "SatImp", "retain", {}),
    ("CE-U", "CrossEntropyUnlearning", None, {}),
    # PDU: the paper's TOFU dual settings; the bound 1.1 x the seen model's retain loss (~ln 4.92)
    (
        "PDU in-dist",
        "PrimalDualUnlearning",
        "retain",
        {"retain_bound": 1.75, "dual_init": 100.0, "dual_lr": 5.0},
    ),
)
TTF_METHODS = ("GA", "GA+GD in-dist")


def method_rows(names: Sequence[str]) -> list[tuple[str, str, str | None, dict]]:
    """The rows of ``METHODS`` named, in that order; a dotted class path (a method of your own,
    outside the package) becomes a row of its own: in-distribution retain data when the class
    trains on retain batches, its defaults otherwise."""
    from lightning_unlearn.planner import method_needs

    table = {m[0]: m for m in METHODS}
    rows = []
    for name in names:
        if name in table:
            rows.append(table[name])
        elif "." in name:
            try:
                needs = method_needs(name)
            except ValueError as err:
                raise SystemExit(str(err)) from None
            rows.append((name, name, "retain" if needs.uses_retain else None, {}))
        else:
            raise SystemExit(
                f"unknown method {name!r}; choose from {[m[0] for m in METHODS]} or give the "
                "dotted class path of an UnlearningModule subclass"
            )
    return rows


# ----------------------------------------------------------------------------------- measuring
def _flat(metrics: dict[str, float]) -> dict[str, Any]:
    """Keep what this benchmark's tables need: per-split perplexity and MIA AUCs (None when
    absent), from a workflow measurement's flat values."""
    return {
        "ppl": {s: common.finite(metrics.get(f"{s}/ppl")) for s in SPLITS},
        "mia_auc": {m: common.finite(metrics.get(f"mia/{m}_auc")) for m in MIA},
    }


def _reached(ppl: float | None, target: float) -> bool:
    return ppl is None or ppl >= target  # None: diverged (inf / NaN) far past the target


def run_one(
    task,
    *,
    name: str,
    cls_name: str,
    retain: str | None,
    kwargs: dict,
    lr: float,
    budgets: Sequence[int],
    check_every: int,
    target: float,
    before,
    data_options: dict,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """One method at one learning rate through the library's workflow: checks of the forget
    split every ``check_every`` steps, the approximate-retrain stop recorded (``halt=False``) and
    measured in full, every budget measured in full; with ``max_steps`` beyond the budgets it
    trains on until the stop is found (or ``max_steps``)."""
    import lightning as L
    from lightning.pytorch import Callback

    from lightning_unlearn.demo import cpu_trainer
    from lightning_unlearn.methods import DivergenceError
    from lightning_unlearn.planner import method_class
    from lightning_unlearn.workflow import UnlearningWorkflow

    L.seed_everything(task.settings.seed, verbose=False)
    data = task.data(retain=retain, **data_options)
    cls = method_class(cls_name)
    module = cls(
        str(task.seen_dir), learning_rate=lr, warmup_ratio=0.0, scheduler="constant", **kwargs
    )
    until_stop = max_steps is not None and max_steps > max(budgets)
    workflow = UnlearningWorkflow(
        target_ppl=target,
        halt=False,
        measure_at_steps=budgets,
        verbose=False,
        checks="fixed",  # a check at every check_every steps: the records read each one
    )

    class UntilStop(Callback):
        """Past every budget and the stop found: nothing more to learn from this run."""

        def on_validation_end(self, trainer, pl_module):
            if "stop" in workflow.measurements and trainer.global_step >= max(budgets):
                trainer.should_stop = True

    trainer = cpu_trainer(
        max_steps=max_steps if until_stop else max(budgets),
        max_epochs=-1,
        val_check_interval=check_every,
        check_val_every_n_epoch=None,
        callbacks=[workflow, *([UntilStop()] if until_stop else [])],
    )
    workflow.begin(trainer, module, data, before=before)
    started = time.perf_counter()
    diverged = None
    try:
        trainer.fit(module, datamodule=data)
    except DivergenceError as err:
        diverged = str(err).split(";")[0]
    steps = int(trainer.global_step)
    where = {c["step"]: c for c in workflow.checks}

    def point(step, measurement) -> dict[str, Any]:
        check = where.get(step, {})
        timing = {k: check.get(k) for k in ("train_seconds", "tokens")}
        return {"step": step, **timing, **_flat(measurement.values)}

    records = [point(step, workflow.measurements[step]) for step in budgets
               if step in workflow.measurements]  # fmt: skip
    stop = None
    if "stop" in workflow.measurements:
        stop = point(workflow.stop_step, workflow.measurements["stop"])
    checks = [
        {"step": c["step"], "train_seconds": c["train_seconds"], "tokens": c["tokens"],
         "forget_ppl": c["ppl"]}
        for c in workflow.checks
    ]  # fmt: skip
    return {
        "method": name,
        "class": cls_name,
        "retain_data": retain,
        "learning_rate": lr,
        "steps": steps,
        "diverged": diverged,
        "wall_seconds": time.perf_counter() - started,
        "train_seconds": workflow.train_seconds,
        "seconds_per_step": workflow.train_seconds / steps if steps else None,
        "records": records,
        "checks": checks,
        "stop": stop,
    }


def time_pretraining(task, *, timed_steps: int) -> dict[str, Any]:
    """Seconds of the continued pre-training (D) and of the exact retrain (D without u), from
    ``timed_steps`` timed steps (after one warm-up) times the number of steps each needs."""
    import lightning as L
    from lightning.pytorch import Callback

    from lightning_unlearn.demo import cpu_trainer, demo_data
    from lightning_unlearn.pretraining import ContinuedPretraining

    s = task.settings
    times: list[float] = []
    tokens: list[int] = []

    class Clock(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self._t = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            times.append(time.perf_counter() - self._t)
            tokens.append(common.count_tokens(batch)[0])

    L.seed_everything(s.seed, verbose=False)
    out: dict[str, Any] = {"timed_steps": timed_steps}
    module = ContinuedPretraining(
        str(task.base_dir), learning_rate=s.pretrain_lr, warmup_ratio=0.0, scheduler="constant"
    )
    data = demo_data(
        task.base_dir,
        task.corpus,
        s,
        train="pretrain",
        batch_size=s.pretrain_batch_size,
        retain=False,
    )
    cpu_trainer(max_steps=1 + timed_steps, limit_val_batches=0, callbacks=[Clock()]).fit(
        module, datamodule=data
    )
    per_step = sum(times[1:]) / max(1, len(times) - 1)
    per_token = sum(times[1:]) / max(1, sum(tokens[1:]))
    out["seconds_per_step"] = per_step
    for train in ("pretrain", "pretrain_without_forget"):
        d = demo_data(
            task.base_dir,
            task.corpus,
            s,
            train=train,
            batch_size=s.pretrain_batch_size,
            retain=False,
        )
        d.setup("fit")
        windows = d.train_dataset("forget")
        steps = math.ceil(len(windows) / s.pretrain_batch_size) * s.pretrain_epochs
        real = sum(windows["num_tokens"]) * s.pretrain_epochs
        out[train] = {
            "steps": steps,
            "tokens": real,
            "seconds": steps * per_step,
            "seconds_by_tokens": real * per_token,
        }
    return out


# ----------------------------------------------------------------------------------- analysis
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
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else 0.5 * (xs[mid - 1] + xs[mid])


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


# ----------------------------------------------------------------------------------- rendering
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
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("forget perplexity")
    ax.set_title("Forget perplexity during unlearning")
    ax.legend(fontsize=6, ncol=2, loc="upper left")
    fig.tight_layout()
    path = folder / "results_forget_curves.png"
    fig.savefig(path)
    out["forget_curves"] = path.name

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
    ax.set_yscale("log")
    ax.set_xlabel("forget perplexity (higher = more forgotten)")
    ax.set_ylabel("retain perplexity (lower = utility kept)")
    ax.set_title("Forget / utility trade-off (dashed: target)")
    ax.legend(fontsize=6, ncol=2, loc="upper left")
    fig.tight_layout()
    path = folder / "results_tradeoff.png"
    fig.savefig(path)
    out["tradeoff"] = path.name
    return out


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:+.0f}%"


def _row(p: dict[str, Any]) -> str:
    ppl, auc, d = p["ppl"], p["mia_auc"], p["distance_to_exact"]
    return (
        " | ".join(common.fmt(ppl[s]) for s in SPLITS)
        + " | "
        + " | ".join(common.fmt(auc[m]) for m in ("loss", "min_k_plus_plus"))
        + " | "
        + " / ".join(_pct(d["relative"][s]) for s in DIST_SPLITS)
        + f" | {common.fmt(d['mean_abs_log'], 3)}"
    )


def render(results: dict[str, Any]) -> str:
    p, g = results["provenance"], results["grid"]
    s = results["settings"]
    a = results["answers"]
    target = results["target_ppl"]
    head = (
        "forget | approx. | retain | general | MIA AUC loss | MIA AUC Min-K%++ | "
        "Δ to exact F / A / R | dist"
    )
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
        f"| model | {head} |",
        "|---|" + "---|" * 8,
        f"| seen (before unlearning) | {_row(results['seen'])} |",
        f"| exact retrain | {_row(results['exact_retrain'])} |",
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
        "| method | cells reaching target | worst dist | best dist | spread | worst utility cost |",
        "|---|---|---|---|---|---|",
    ]
    rob = a["a_robustness"]["by_method"]
    for m in a["a_robustness"]["ranking"]:
        r = rob[m]
        lines.append(
            f"| {m} | {r['reached']}/{r['cells']} | {common.fmt(r['worst_distance'], 3)} | "
            f"{common.fmt(r['best_distance'], 3)} | {common.fmt(r['spread_distance'], 3)} | "
            f"{common.fmt(r['worst_utility_cost'], 3)} |"
        )
    lines += [
        "",
        _answer_a(results),
        "",
        "## (b) Does stopping at the target land near exact retrain?",
        "",
        f"| method | lr | stop step | train s | {head} |",
        "|---|---|---|---|" + "---|" * 8,
    ]
    for run in results["runs"]:
        st = run["stop"]
        if st:
            lines.append(
                f"| {run['method']} | {run['learning_rate']:g} | {st['step']} | "
                f"{st['train_seconds']:.0f} | {_row(st)} |"
            )
        else:
            lines.append(
                f"| {run['method']} | {run['learning_rate']:g} | not reached in "
                f"{run['steps']} | — |" + " — |" * 8
            )
    lines += [
        "",
        _answer_b(results),
        "",
        "## (c) Forget / utility trade-off",
        "",
        "Best stop point of each method (lowest utility cost among its learning rates):",
        "",
        "| method | lr | stop step | utility cost | dist to exact | MIA AUC (loss) |",
        "|---|---|---|---|---|---|",
    ]
    best = a["c_tradeoff"]["best_stop_per_method"]
    for m in a["c_tradeoff"]["ranking"]:
        b = best[m]
        lines.append(
            f"| {m} | {b['learning_rate']:g} | {b['step']} | {common.fmt(b['utility_cost'], 3)} | "
            f"{common.fmt(b['distance'], 3)} | {common.fmt(b['mia_loss_auc'])} |"
        )
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
        f"| method | lr | steps | train s | {head} | reached |",
        "|---|---|---|---|" + "---|" * 8 + "---|",
    ]
    for run in results["runs"]:
        for r in run["records"]:
            lines.append(
                f"| {run['method']} | {run['learning_rate']:g} | {r['step']} | "
                f"{r['train_seconds']:.0f} | {_row(r)} | {'yes' if r['reached_target'] else 'no'} |"
            )
        if run["diverged"]:
            lines.append(
                f"| {run['method']} | {run['learning_rate']:g} | {run['steps']} | — | "
                f"diverged: {run['diverged']} |" + " |" * 8
            )
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
        "| method | lr | schedule | steps | train s | tokens | % of continued pre-training | "
        "% of exact retrain | forget ppl | retain ppl | general ppl | utility cost | dist |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if not r["reached"]:
            lines.append(
                f"| {r['method']} | {r['learning_rate']:g} | {r['schedule']} | not reached |"
                + " — |" * 9
            )
            continue
        ppl = r["ppl"]
        lines.append(
            f"| {r['method']} | {r['learning_rate']:g} | {r['schedule']} | {r['step']} | "
            f"{r['train_seconds']:.0f} | {r['tokens']} | "
            f"{_frac(r.get('fraction_of_pretrain'))} ({_frac(_tok(r, pre, 'pretrain'))}) | "
            f"{_frac(r.get('fraction_of_pretrain_without_forget'))} "
            f"({_frac(_tok(r, pre, 'pretrain_without_forget'))}) | "
            f"{common.fmt(ppl['forget'])} | {common.fmt(ppl['retain'])} | {common.fmt(ppl['general'])} | "
            f"{common.fmt(r['utility_cost'], 3)} | {common.fmt(r['distance'], 3)} |"
        )
    return "\n".join(lines)


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


# ----------------------------------------------------------------------------------- main
def _finish(results: dict[str, Any], started: float, json_path: Path, md_path: Path) -> None:
    annotate(results)
    results["answers"] = answers(results)
    results["time_to_forget"] = time_to_forget(results)
    # every invocation's time: a resumed benchmark took the sum
    results["total_seconds"] = results.get("prior_seconds", 0.0) + time.perf_counter() - started
    results["plots"] = plot(results, md_path.parent)
    common.write_json(json_path, results)
    write_markdown(results, md_path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--model",
        default=None,
        help="base model folder (default: SmolLM2-135M-Instruct converted from GGUF)",
    )
    p.add_argument("--smoke", action="store_true", help="tiny settings for a test (needs --model)")
    p.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help=f"subset of {[m[0] for m in METHODS]} or dotted class paths of your own methods "
        "(default: all)",
    )
    p.add_argument(
        "--lrs",
        nargs="+",
        type=float,
        default=None,
        help="learning rates (default: the demo's and 3x it)",
    )
    p.add_argument(
        "--budgets",
        nargs="+",
        type=int,
        default=None,
        help="step budgets (default: half an epoch and one epoch over the forget set)",
    )
    p.add_argument("--check-every", type=int, default=1, help="steps between forget-ppl checks")
    p.add_argument(
        "--ttf-max-steps",
        type=int,
        default=None,
        help="the time-to-forget runs go on until the stop, at most this many steps "
        "(default: 3 epochs)",
    )
    p.add_argument("--eval-chunks", type=int, default=8, help="evaluation windows per split")
    p.add_argument("--eval-batch-size", type=int, default=2)
    p.add_argument(
        "--ttf-lr",
        type=float,
        default=None,
        help="learning rate of the one-epoch GA / GA+GD runs (default: first --lrs)",
    )
    p.add_argument("--no-ttf", action="store_true", help="skip the one-epoch time-to-forget runs")
    p.add_argument("--pretrain-timed-steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cache-dir", default=None, help="demo cache (default: the demo's)")
    p.add_argument("--json", default=str(common.ROOT / "docs" / "results.json"))
    p.add_argument("--markdown", default=str(common.ROOT / "docs" / "results.md"))
    p.add_argument("--cut", default="", help="a note on what was cut to fit the time budget")
    p.add_argument("--render-only", action="store_true", help="re-render --markdown from --json")
    p.add_argument(
        "--commentary",
        default=None,
        help="with --render-only: a markdown file of hand-written reading of the results",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="reuse the reference scores and the finished runs in --json",
    )
    common.add_budget_argument(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    json_path, md_path = Path(args.json), Path(args.markdown)
    if args.render_only:  # recompute the analysis from the stored scores and re-render
        import json

        results = json.loads(json_path.read_text())
        if args.commentary:
            results["commentary"] = Path(args.commentary).read_text()
        annotate(results)
        results["answers"] = answers(results)
        results["time_to_forget"] = time_to_forget(results)
        results["plots"] = plot(results, md_path.parent)
        common.write_json(json_path, results)
        write_markdown(results, md_path)
        return 0
    from lightning_unlearn.demo import DemoSettings, quiet

    quiet()
    common.set_threads(args.threads)
    if args.smoke:
        if not args.model:
            raise SystemExit("--smoke needs --model <tiny model folder>")
        settings = common.smoke_settings(args.cache_dir or json_path.parent / "quality-cache")
        methods = args.methods or ["GA", "GA+GD in-dist"]
        budgets = args.budgets or [1, 2]
        check_every = 1
    else:
        settings = DemoSettings(**({"cache_dir": args.cache_dir} if args.cache_dir else {}))
        methods = args.methods or [m[0] for m in METHODS]
        budgets = args.budgets  # None: set from the epoch length below
        check_every = args.check_every
    rows = method_rows(methods)
    lrs = args.lrs or (
        [1e-3, 1e-2] if args.smoke else [settings.unlearn_lr, 3 * settings.unlearn_lr]
    )
    ttf_lr = args.ttf_lr or lrs[0]
    started = time.perf_counter()

    task = common.DemoTask.build(settings, base_model=args.model)
    data = task.data()
    data.setup("fit")
    epoch_steps = math.ceil(len(data.train_dataset("forget")) / settings.unlearn_batch_size)
    budgets = sorted(set(budgets or [max(1, epoch_steps // 2), epoch_steps]))
    ttf_max = args.ttf_max_steps or 3 * epoch_steps
    print(f"one epoch = {epoch_steps} steps; budgets {budgets}", flush=True)
    # every run scores the same subset of each split: eval_chunks windows spread evenly over it
    data_options = {"eval_subset": args.eval_chunks, "eval_batch_size": args.eval_batch_size}
    from lightning_unlearn.workflow import Measurement, UnlearningWorkflow

    scorer = UnlearningWorkflow(verbose=False)
    eval_data = task.data(**data_options)
    previous = None
    if args.resume and json_path.exists():
        import json

        previous = json.loads(json_path.read_text())
    if previous is not None:  # same scoring subset: reuse the reference scores and finished runs
        seen_values = previous.get("seen_values") or {
            **{f"{s}/ppl": v for s, v in previous["seen"]["ppl"].items() if v is not None},
            **{f"mia/{m}_auc": v for m, v in previous["seen"]["mia_auc"].items() if v is not None},
        }  # a file written before the scores were kept flat
        exact = previous["exact_retrain"]
    else:
        seen_values = scorer.measure_checkpoint(task.seen_dir, eval_data).values
        exact = _flat(scorer.measure_checkpoint(task.exact_dir, eval_data).values)
    seen = _flat(seen_values)
    before = Measurement(dict(seen_values))
    target = seen["ppl"]["approximate"]
    print(f"target {target:.3f}; seen {seen['ppl']}; exact {exact['ppl']}", flush=True)
    pretraining = (previous or {}).get("pretraining")  # kept on --resume

    results: dict[str, Any] = {
        "provenance": common.provenance(),
        "settings": dataclasses.asdict(settings),
        "model": str(task.seen_dir),
        "exact_model": str(task.exact_dir),
        "methods": methods,
        "grid": {
            "lrs": lrs,
            "budgets": budgets,
            "check_every": check_every,
            "eval_chunks": args.eval_chunks,
            "eval_batch_size": args.eval_batch_size,
            "epoch_steps": epoch_steps,
            "ttf_lr": ttf_lr,
        },
        "target_ppl": target,
        "seen": seen,
        "seen_values": seen_values,
        "exact_retrain": exact,
        "pretraining": pretraining,
        "runs": [],
        "cut": args.cut,
        "complete": False,
        "prior_seconds": float((previous or {}).get("total_seconds") or 0.0),
    }
    done = {(r["method"], r["learning_rate"]): r for r in (previous or {}).get("runs", [])}
    budget, ran = common.Budget(args.budget_minutes), 0  # a unit: one method at one rate
    for (
        name,
        cls_name,
        retain,
        kwargs,
    ) in rows:  # in the order asked for: the most informative first
        for lr in lrs:
            if (name, lr) in done:
                results["runs"].append(done[(name, lr)])
                continue
            if ran and budget.spent():  # every finished run is already in --json
                left = len(rows) * len(lrs) - len(results["runs"])
                print(budget.stop_line(ran, left, "quality.py"), flush=True)
                return 0
            ran += 1
            epoch_run = (not args.no_ttf) and name in TTF_METHODS and lr == ttf_lr
            run_budgets = sorted(set(budgets) | ({epoch_steps} if epoch_run else set()))
            t = time.perf_counter()
            run = run_one(
                task,
                name=name,
                cls_name=cls_name,
                retain=retain,
                kwargs=kwargs,
                lr=lr,
                budgets=run_budgets,
                check_every=check_every,
                target=target,
                before=before,
                data_options=data_options,
                max_steps=ttf_max if epoch_run else None,
            )
            run["epoch_run"], run["epoch_steps"] = epoch_run, epoch_steps
            results["runs"].append(run)
            stop = run["stop"]["step"] if run["stop"] else None
            print(
                f"{name:14s} lr {lr:g}: {run['steps']} steps, {run['seconds_per_step'] or 0:.2f} "
                f"s/step, stop {stop}, wall {time.perf_counter() - t:.0f} s, total "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )
            _finish(results, started, json_path, md_path)  # partial results survive an interrupt
    if not args.no_ttf and args.pretrain_timed_steps > 0:
        # timed last: the grid's partial results are already written if this is interrupted
        results["pretraining"] = time_pretraining(task, timed_steps=args.pretrain_timed_steps)
        print(f"pretraining {results['pretraining']['seconds_per_step']:.2f} s/step", flush=True)
    results["complete"] = True
    _finish(results, started, json_path, md_path)
    print(f"wrote {json_path} and {md_path} in {results['total_seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
