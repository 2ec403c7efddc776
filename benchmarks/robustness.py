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
Per-document targets (#27): DocumentTargetMatching with targets from the never-seen base model and
with quantile targets, and GA+GD with the per-document mask, each up to the per-document stop.

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
import robustness_page as page  # noqa: E402
from robustness_analysis import ENDS  # noqa: E402
from robustness_models import (  # noqa: E402
    EST_QUANTIZE_S,
    EST_RELEARN_STEP_S,
    EST_SCORING_S,
    EST_UNLEARN_S,
    Progress,
    attack_model,
    scoring_metrics,
)
from runs import Method, unlearn  # noqa: E402

#: ``documents: {"reference": ...}`` of a row: the base model before continued pre-training (never saw the forget set)
NEVER_SEEN = "never-seen"

#: the methods (``--methods`` by name; names as in ``quality.py``): the class, the split its
#: retain term trains on, more constructor / data-module / workflow options
METHODS = (
    Method("GA", "GradientAscent"),
    Method("GA+GD in-dist", "GradientAscentDescent", "retain"),
    Method("GA+KL in-dist", "GradientAscentKL", "retain"),
    Method("NPO+GD in-dist", "NegativePreferenceOptimization", "retain", {"retain_term": "nll"}),
    Method("SimNPO", "SimNPO", None, {"retain_term": "none"}),
    Method("UNDIAL", "UNDIAL"),
    # per-document targets (#27): this library's DocumentTargetMatching (targets from the
    # never-seen base model, or quantile targets) and GA+GD with the per-document mask
    Method(
        "DTM+ref in-dist",
        "DocumentTargetMatching",
        "retain",
        workflow={"documents": {"reference": NEVER_SEEN}},
    ),
    Method("DTM in-dist", "DocumentTargetMatching", "retain", workflow={"documents": {}}),
    Method(
        "GA+GD+mask in-dist",
        "GradientAscentDescent",
        "retain",
        workflow={"documents": {"reference": NEVER_SEEN, "mask": True}},
    ),
    # DTM with every forget document in each step beside a retain batch of 4 (the competition
    # benchmark's DTM+ref/all)
    Method(
        "DTM+ref/all in-dist",
        "DocumentTargetMatching",
        "retain",
        data={"batch_size": "all", "retain_batch_size": 4},
        workflow={"documents": {"reference": NEVER_SEEN}},
    ),
)


# ----------------------------------------------------------------------------------- unlearning
def unlearn_method(task, method: Method, *, lr, max_steps, tolerance, target, before, data_options):
    """Unlearn the seen model with one method up to the approximate-retrain stop; returns the
    unlearned network (``None`` if it diverged), its ``after`` measurement and what happened."""
    documents = method.workflow.get("documents")
    if documents is not None and documents.get("reference") == NEVER_SEEN:  # it never saw them
        documents = {**documents, "reference": str(task.base_dir)}
        method = dataclasses.replace(method, workflow={**method.workflow, "documents": documents})
    run = unlearn(
        method,
        task.seen_dir,
        lambda retain, **more: task.data(retain=retain, **{**data_options, **more}),
        lr=lr,
        seed=task.settings.seed,
        workflow=dict(
            metrics=scoring_metrics(),
            target_ppl=target,
            tolerance=tolerance,
            halt=True,
            checks="fixed",  # every step, as the stored rows were checked
        ),
        trainer=dict(
            max_steps=max_steps, max_epochs=-1, val_check_interval=1, check_val_every_n_epoch=None
        ),
        # per-document targets read each document's before: measured by the workflow
        before=None if documents is not None else before,
    )
    workflow = run.workflow
    info = {
        "method": method.name,
        "class": method.class_name,
        "retain_data": method.retain,
        "kwargs": dict(method.kwargs),
        "learning_rate": lr,
        "steps": run.steps,
        "stopped_step": run.stopped_step,
        "reached_target": run.stopped_step is not None,
        "diverged": run.diverged,
        "train_seconds": workflow.train_seconds,
        "wall_seconds": run.seconds,
        "checks": [
            {
                "step": c["step"],
                "forget_ppl": c["ppl"],
                **({"within": c["within"]} if "within" in c else {}),
            }
            for c in workflow.checks
        ],
    }
    targeting = workflow.training.documents
    if targeting is not None and targeting.targets is not None:
        info["document_targets"] = targeting.targets.to_json()
    model = run.module.model
    run.module.model = None
    run.module.reference = None
    del run
    gc.collect()
    return (None if info["diverged"] else model), workflow.after, info


# ----------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="base model folder (default: SmolLM2 from GGUF)")
    p.add_argument("--smoke", action="store_true", help="tiny settings for a test (needs --model)")
    p.add_argument(
        "--methods",
        nargs="+",
        help=f"subset of {[m.name for m in METHODS]} (default: all)",
    )
    p.add_argument(
        "--unlearn-lr",
        type=float,
        help="unlearning learning rate (default: the demo's, 7e-5)",
    )
    p.add_argument(
        "--max-unlearn-steps",
        type=int,
        help="give up on the stop after this many steps (default: 3 epochs)",
    )
    p.add_argument("--tolerance", type=float, default=0.05, help="the stop's tolerance")
    p.add_argument(
        "--relearn-data",
        nargs="+",
        default=["retain", "forget_slice"],
        choices=["retain", "general", "forget_slice"],
    )
    p.add_argument(
        "--relearn-steps",
        nargs="+",
        type=int,
        help="relearning step counts scored (default 1 2 4 8)",
    )
    p.add_argument("--relearn-lr", type=float, help="relearning lr (default: unlearning's)")
    p.add_argument("--slice-fraction", type=float, default=0.25)
    p.add_argument("--bits", nargs="+", type=int, default=[8, 4])
    p.add_argument("--group-size", type=int, default=64)
    p.add_argument(
        "--include-embeddings", action="store_true", help="quantize the (tied) embeddings too"
    )
    p.add_argument(
        "--eval-splits",
        nargs="+",
        default=["forget", "approximate", "general"],
        help="splits scored (forget and approximate are needed)",
    )
    p.add_argument("--eval-chunks", type=int, help="windows scored per split (default: all)")
    p.add_argument("--eval-batch-size", type=int, default=8)
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--confidence", type=float, default=0.95, help="bootstrap interval coverage")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cache-dir", default=None, help="demo cache (default: the demo's)")
    p.add_argument(
        "--json", default=str(common.ROOT / "benchmarks" / "results" / "robustness.json")
    )
    p.add_argument("--markdown", default=str(common.ROOT / "docs" / "results.md"))
    p.add_argument(
        "--quality-json",
        default=str(common.ROOT / "docs" / "results.json"),
        help="the quality benchmark's results, for the ranking comparison",
    )
    p.add_argument("--resume", action="store_true", help="reuse the scores already in --json")
    common.add_budget_argument(p)
    p.add_argument("--render-only", action="store_true", help="re-render from --json")
    return p


METHODS_BY_NAME = {m.name: m for m in METHODS}
#: the options that make stored scores reusable (``--resume`` checks them)
SCORING_KEY = (
    "unlearn_lr",
    "tolerance",
    "relearn_lr",
    "relearn_batch_size",
    "slice_fraction",
    "group_size",
    "include_embeddings",
    "eval_splits",
    "eval_chunks",
)


def _settings(args, json_path: Path):
    """The demo settings, the methods, the relearning steps, the unlearning lr, the step limit
    and the bootstrap's resamples (smaller with ``--smoke``)."""
    from lightning_unlearn.demo import DemoSettings

    if args.smoke:
        if not args.model:
            raise SystemExit("--smoke needs --model <tiny model folder>")
        settings = common.smoke_settings(args.cache_dir or json_path.parent / "robustness-cache")
        methods = args.methods or ["GA", "GA+GD in-dist"]
        steps, unlearn_lr, max_steps = args.relearn_steps or [1, 2], args.unlearn_lr or 1e-3, 3
        resamples = min(args.resamples, 200)
    else:
        settings = DemoSettings(**({"cache_dir": args.cache_dir} if args.cache_dir else {}))
        methods = args.methods or list(METHODS_BY_NAME)
        steps = args.relearn_steps or [1, 2, 4, 8]
        unlearn_lr = args.unlearn_lr or settings.unlearn_lr
        max_steps, resamples = None, args.resamples
    unknown = set(methods) - set(METHODS_BY_NAME)
    if unknown:
        raise SystemExit(f"unknown methods {sorted(unknown)}; choose from {list(METHODS_BY_NAME)}")
    return settings, methods, steps, unlearn_lr, max_steps, resamples


def _attacks(args, steps, relearn_lr: float, seed: int, data) -> tuple[list, list, list]:
    """The attacks (relearning on each ``--relearn-data``, then quantization) and the forget
    slice the relearning holds out with the rest of the forget set."""
    from lightning_unlearn.attacks import QuantizeAttack, RelearnAttack

    attacks: list[Any] = [
        RelearnAttack(
            steps=tuple(steps),
            data=d,
            slice_fraction=args.slice_fraction,
            learning_rate=relearn_lr,
            seed=seed,
        )
        for d in args.relearn_data
    ]
    attacks.append(
        QuantizeAttack(
            bits=tuple(args.bits),
            group_size=args.group_size,
            include_embeddings=args.include_embeddings,
        )
    )
    the_slice, rest = RelearnAttack(slice_fraction=args.slice_fraction, seed=seed).split(data)
    return attacks, the_slice, rest


def _estimate(args, todo, methods, steps, n_variants) -> float:
    """Rough minutes of the plan on the recorded 2-core machine."""
    relearn_steps = max(steps) * len(args.relearn_data) * len(todo)
    unlearning = sum(1 for k in todo if k in methods)
    seconds = len(todo) * n_variants * EST_SCORING_S + relearn_steps * EST_RELEARN_STEP_S
    seconds += unlearning * EST_UNLEARN_S + len(todo) * len(args.bits) * EST_QUANTIZE_S
    return seconds / 60


def _before(results: dict):
    """B's scores before unlearning (every method's "before" and its target), once scored."""
    from lightning_unlearn.workflow import Measurement

    variants = results["models"].get("B", {}).get("variants", {})
    if "none" not in variants:
        return None
    values = variants["none"]["values"]
    return Measurement({k: v for k, v in values.items() if v is not None})


def _outcome(info: dict) -> str:
    if info["reached_target"]:
        outcome = f"stopped at step {info['stopped_step']}"
    else:
        outcome = f"target not reached in {info['steps']} steps"
    if info["diverged"]:
        outcome += f", diverged ({info['diverged']}): not attacked"
    return outcome


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    json_path, md_path = Path(args.json), Path(args.markdown)
    if args.render_only:
        results = json.loads(json_path.read_text())
        page.write(results, json_path, md_path, render_markdown=True)
        print(f"rendered {md_path} from {json_path}", flush=True)
        return 0
    from lightning_unlearn.attacks import document_target_counts
    from lightning_unlearn.demo import quiet
    from lightning_unlearn.models import load_causal_lm
    from lightning_unlearn.workflow import UnlearningWorkflow

    quiet()
    threads = common.set_threads(args.threads)
    settings, methods, steps, unlearn_lr, max_steps, resamples = _settings(args, json_path)
    splits = list(dict.fromkeys(args.eval_splits))
    if not {"forget", "approximate"} <= set(splits):
        raise SystemExit("--eval-splits must include forget and approximate (the MIA needs both)")
    if "general" in args.relearn_data and "general" not in splits:
        raise SystemExit("relearning on general text needs 'general' in --eval-splits")
    started = time.perf_counter()
    task = common.DemoTask.build(settings, base_model=args.model)
    data_options = {
        "eval_splits": splits,
        "eval_batch_size": args.eval_batch_size,
        "eval_subset": args.eval_chunks,
    }
    data = task.data(retain="retain", **data_options)
    data.setup("fit")
    epoch_steps = math.ceil(len(data.train_dataset("forget")) / settings.unlearn_batch_size)
    max_steps = args.max_unlearn_steps or max_steps or 3 * epoch_steps
    relearn_lr = args.relearn_lr or unlearn_lr
    attacks, the_slice, rest = _attacks(args, steps, relearn_lr, settings.seed, data)
    tokens = document_target_counts(data, "forget")
    options = {
        "unlearn_lr": unlearn_lr,
        "max_unlearn_steps": max_steps,
        "tolerance": args.tolerance,
        "relearn_data": list(args.relearn_data),
        "relearn_steps": sorted(set(steps)),
        "relearn_lr": relearn_lr,
        "relearn_batch_size": settings.unlearn_batch_size,
        "slice_fraction": args.slice_fraction,
        "bits": list(args.bits),
        "group_size": args.group_size,
        "include_embeddings": args.include_embeddings,
        "eval_splits": splits,
        "eval_chunks": args.eval_chunks,
        "eval_batch_size": args.eval_batch_size,
        "resamples": resamples,
        "confidence": args.confidence,
        "quality_json": args.quality_json,
        "threads": threads,
    }
    scoring_key = {k: options[k] for k in SCORING_KEY}
    settings_dict = dataclasses.asdict(settings)
    previous = common.previous_results(
        json_path, args.resume, scoring_key=scoring_key, settings=settings_dict
    )
    results: dict[str, Any] = {
        "provenance": common.provenance(),
        "settings": settings_dict,
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
    wanted = n_variants + ("forget_slice" in args.relearn_data)
    todo = [
        k
        for k in ["B", "R", *methods]
        if len(results["models"].get(k, {}).get("variants", {})) < wanted
    ]
    progress = Progress(len(todo) * n_variants, sum(1 for k in todo if k in methods), started)
    progress.line(
        f"plan: {len(todo)} models ({', '.join(todo) or 'none left'}) x {n_variants} scorings "
        f"(none + {', '.join(n for a in attacks for n in a.variant_names())}); forget slice "
        f"{the_slice} of {len(the_slice) + len(rest)} documents; one epoch = {epoch_steps} steps"
        + (
            ""
            if args.smoke
            else f"; about {_estimate(args, todo, methods, steps, n_variants):.0f} min on 2 cores"
        )
    )

    def save(render_markdown: bool = False) -> None:
        results["total_seconds"] = prior_seconds + time.perf_counter() - started
        page.write(results, json_path, md_path, render_markdown=render_markdown)

    scorer = UnlearningWorkflow(metrics=scoring_metrics(), verbose=False)
    attack = dict(scorer=scorer, progress=progress, save=save)
    ends = {"B": task.seen_dir, "R": task.exact_dir}
    for key, path in ends.items():
        results["models"].setdefault(key, {"label": ENDS[key], "path": str(path)})
    # a unit is one model with every attack on it; each is in --json when it ends
    budget = common.Budget(args.budget_minutes)
    for key in budget.units(todo, "robustness.py"):
        entry = results["models"].setdefault(key, {"label": key})
        if key in ENDS:
            model = load_causal_lm(str(ends[key])).eval()
            attack_model(key, model, attacks, data, tokens, entry, **attack)
        else:
            before = _before(results)
            target = results["target_ppl"] = before.values["approximate/ppl"]
            progress.line(
                f"{key}: unlearning at lr {unlearn_lr:g} up to the stop (target {target:.3f}, "
                f"at most {max_steps} steps)"
            )
            t = time.perf_counter()
            model, after, info = unlearn_method(
                task,
                METHODS_BY_NAME[key],
                lr=unlearn_lr,
                max_steps=max_steps,
                tolerance=args.tolerance,
                target=target,
                before=before,
                data_options=data_options,
            )
            progress.unlearned(time.perf_counter() - t)
            entry["unlearning"] = info
            progress.line(f"{key}: {_outcome(info)} ({info['wall_seconds']:.0f} s)")
            if model is not None:
                attack_model(
                    key, model, attacks, data, tokens, entry, **attack, none_measurement=after
                )
        del model
        gc.collect()
        save(render_markdown=True)
    before = _before(results)
    results["target_ppl"] = before.values["approximate/ppl"] if before is not None else None
    if budget.stopped:
        save(render_markdown=True)
        return 0
    results["complete"] = True
    save(render_markdown=True)
    progress.line(f"wrote {json_path} and {md_path} ({results['total_seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
