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
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import quality_page as page  # noqa: E402
from quality_analysis import TTF_METHODS, flat  # noqa: E402
from runs import Method, select, step_clock, unlearn  # noqa: E402

log = logging.getLogger("benchmarks.quality")

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


def method_rows(names: Sequence[str]) -> list[tuple[str, str, str | None, dict]]:
    """The rows of ``METHODS`` named, in that order; a dotted class path (a method of your own,
    outside the package) becomes a row of its own: in-distribution retain data when the class
    trains on retain batches, its defaults otherwise."""
    rows = select([Method(*row) for row in METHODS], names)
    return [(m.name, m.class_name, m.retain, dict(m.kwargs)) for m in rows]


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
    from lightning.pytorch import Callback

    until_stop = max_steps is not None and max_steps > max(budgets)

    class UntilStop(Callback):
        """Past every budget and the stop found: nothing more to learn from this run."""

        def __init__(self, workflow) -> None:
            self.workflow = workflow

        def on_validation_end(self, trainer, pl_module):
            if "stop" in self.workflow.measurements and trainer.global_step >= max(budgets):
                trainer.should_stop = True

    run = unlearn(
        Method(name, cls_name, retain, kwargs),
        task.seen_dir,
        lambda retain, **more: task.data(retain=retain, **{**data_options, **more}),
        lr=lr,
        seed=task.settings.seed,
        # a check at every check_every steps: the records read each one
        workflow=dict(target_ppl=target, halt=False, measure_at_steps=budgets, checks="fixed"),
        trainer=dict(
            max_steps=max_steps if until_stop else max(budgets),
            max_epochs=-1,
            val_check_interval=check_every,
            check_val_every_n_epoch=None,
        ),
        before=before,
        callbacks=lambda workflow: [UntilStop(workflow)] if until_stop else [],
        after=False,
    )
    workflow = run.workflow
    where = {c["step"]: c for c in workflow.checks}

    def point(step, measurement) -> dict[str, Any]:
        check = where.get(step, {})
        timing = {k: check.get(k) for k in ("train_seconds", "tokens")}
        return {"step": step, **timing, **flat(measurement.values)}

    measured = workflow.measurements
    records = [point(step, measured[step]) for step in budgets if step in measured]
    stop = point(workflow.stop_step, measured["stop"]) if "stop" in measured else None
    keys = ("step", "train_seconds", "tokens")
    checks = [{**{k: c[k] for k in keys}, "forget_ppl": c["ppl"]} for c in workflow.checks]
    steps = run.steps
    return {
        "method": name,
        "class": cls_name,
        "retain_data": retain,
        "learning_rate": lr,
        "steps": steps,
        "diverged": run.diverged,
        "wall_seconds": run.seconds,
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

    from lightning_unlearn.demo import cpu_trainer, demo_data
    from lightning_unlearn.pretraining import ContinuedPretraining

    s = task.settings
    clock = step_clock()

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
    cpu_trainer(max_steps=1 + timed_steps, limit_val_batches=0, callbacks=[clock]).fit(
        module, datamodule=data
    )
    times, tokens = clock.times, clock.tokens
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
# ----------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--model",
        help="base model folder (default: SmolLM2-135M-Instruct converted from GGUF)",
    )
    p.add_argument("--smoke", action="store_true", help="tiny settings for a test (needs --model)")
    p.add_argument(
        "--methods",
        nargs="+",
        help=f"subset of {[m[0] for m in METHODS]} or dotted class paths of your own methods "
        "(default: all)",
    )
    p.add_argument(
        "--lrs",
        nargs="+",
        type=float,
        help="learning rates (default: the demo's and 3x it)",
    )
    p.add_argument(
        "--budgets",
        nargs="+",
        type=int,
        help="step budgets (default: half an epoch and one epoch over the forget set)",
    )
    p.add_argument("--check-every", type=int, default=1, help="steps between forget-ppl checks")
    p.add_argument(
        "--ttf-max-steps",
        type=int,
        help="the time-to-forget runs go on until the stop, at most this many steps "
        "(default: 3 epochs)",
    )
    p.add_argument("--eval-chunks", type=int, default=8, help="evaluation windows per split")
    p.add_argument("--eval-batch-size", type=int, default=2)
    p.add_argument(
        "--ttf-lr",
        type=float,
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
        help="with --render-only: a markdown file of hand-written reading of the results",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="reuse the reference scores and the finished runs in --json",
    )
    common.add_budget_argument(p)
    return p


def _settings(args, json_path: Path):
    """The demo settings, the methods, the budgets (``None``: from the epoch length) and the
    steps between checks."""
    from lightning_unlearn.demo import DemoSettings

    if args.smoke:
        if not args.model:
            raise SystemExit("--smoke needs --model <tiny model folder>")
        settings = common.smoke_settings(args.cache_dir or json_path.parent / "quality-cache")
        return settings, args.methods or ["GA", "GA+GD in-dist"], args.budgets or [1, 2], 1
    settings = DemoSettings(**({"cache_dir": args.cache_dir} if args.cache_dir else {}))
    return settings, args.methods or [m[0] for m in METHODS], args.budgets, args.check_every


def _references(task, previous: dict | None, eval_data) -> tuple[dict, dict]:
    """The seen model's flat values and the exact-retrain model's scores: stored ones on
    ``--resume`` (the same scoring subset), else measured."""
    from lightning_unlearn.workflow import UnlearningWorkflow

    if previous is None:
        scorer = UnlearningWorkflow(verbose=False)
        seen_values = scorer.measure_checkpoint(task.seen_dir, eval_data).values
        return seen_values, flat(scorer.measure_checkpoint(task.exact_dir, eval_data).values)
    seen_values = previous.get("seen_values") or {  # a file written before they were kept flat
        **{f"{s}/ppl": v for s, v in previous["seen"]["ppl"].items() if v is not None},
        **{f"mia/{m}_auc": v for m, v in previous["seen"]["mia_auc"].items() if v is not None},
    }
    return seen_values, previous["exact_retrain"]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    json_path, md_path = Path(args.json), Path(args.markdown)
    if args.render_only:  # recompute the analysis from the stored scores and re-render
        results = json.loads(json_path.read_text())
        if args.commentary:
            results["commentary"] = Path(args.commentary).read_text()
        page.write(results, json_path, md_path)
        return 0
    from lightning_unlearn.demo import quiet
    from lightning_unlearn.workflow import Measurement

    quiet()
    common.set_threads(args.threads)
    settings, methods, budgets, check_every = _settings(args, json_path)
    rows = method_rows(methods)
    smoke_lrs = [1e-3, 1e-2]
    lrs = args.lrs or (smoke_lrs if args.smoke else [settings.unlearn_lr, 3 * settings.unlearn_lr])
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
    previous = common.previous_results(json_path, args.resume)
    seen_values, exact = _references(task, previous, task.data(**data_options))
    seen = flat(seen_values)
    before = Measurement(dict(seen_values))
    target = seen["ppl"]["approximate"]
    print(f"target {target:.3f}; seen {seen['ppl']}; exact {exact['ppl']}", flush=True)
    grid = {
        "lrs": lrs,
        "budgets": budgets,
        "check_every": check_every,
        "eval_chunks": args.eval_chunks,
        "eval_batch_size": args.eval_batch_size,
        "epoch_steps": epoch_steps,
        "ttf_lr": ttf_lr,
    }
    results: dict[str, Any] = {
        "provenance": common.provenance(),
        "settings": dataclasses.asdict(settings),
        "model": str(task.seen_dir),
        "exact_model": str(task.exact_dir),
        "methods": methods,
        "grid": grid,
        "target_ppl": target,
        "seen": seen,
        "seen_values": seen_values,
        "exact_retrain": exact,
        "pretraining": (previous or {}).get("pretraining"),  # kept on --resume
        "runs": [],
        "cut": args.cut,
        "complete": False,
        "prior_seconds": float((previous or {}).get("total_seconds") or 0.0),
    }
    # a unit: one method at one rate, in the order asked for (the most informative first)
    plan = [(row, lr) for row in rows for lr in lrs]
    finished = {(r["method"], r["learning_rate"]): r for r in (previous or {}).get("runs", [])}
    todo = [(row, lr) for row, lr in plan if (row[0], lr) not in finished]

    def save() -> None:  # every invocation's time: a resumed benchmark took the sum
        results["runs"] = [finished[row[0], lr] for row, lr in plan if (row[0], lr) in finished]
        results["total_seconds"] = results["prior_seconds"] + time.perf_counter() - started
        page.write(results, json_path, md_path)

    results["runs"] = [finished[row[0], lr] for row, lr in plan if (row[0], lr) in finished]
    budget = common.Budget(args.budget_minutes)
    for (name, cls_name, retain, kwargs), lr in budget.units(todo, "quality.py"):
        epoch_run = (not args.no_ttf) and name in TTF_METHODS and lr == ttf_lr
        run_budgets = sorted(set(budgets) | ({epoch_steps} if epoch_run else set()))
        t = time.perf_counter()
        row = dict(name=name, cls_name=cls_name, retain=retain, kwargs=kwargs, lr=lr)
        cells = dict(budgets=run_budgets, check_every=check_every, data_options=data_options)
        stop_at = dict(target=target, before=before, max_steps=ttf_max if epoch_run else None)
        run = run_one(task, **row, **cells, **stop_at)
        run["epoch_run"], run["epoch_steps"] = epoch_run, epoch_steps
        finished[name, lr] = run
        stop = run["stop"]["step"] if run["stop"] else None
        print(
            f"{name:14s} lr {lr:g}: {run['steps']} steps, {run['seconds_per_step'] or 0:.2f} "
            f"s/step, stop {stop}, wall {time.perf_counter() - t:.0f} s, total "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
        save()  # partial results survive an interruption
    if budget.stopped:  # every finished run is already in --json
        return 0
    if not args.no_ttf and args.pretrain_timed_steps > 0:
        # timed last: the grid's partial results are already written if this is interrupted
        results["pretraining"] = time_pretraining(task, timed_steps=args.pretrain_timed_steps)
        print(f"pretraining {results['pretraining']['seconds_per_step']:.2f} s/step", flush=True)
    results["complete"] = True
    save()
    print(f"wrote {json_path} and {md_path} in {results['total_seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
