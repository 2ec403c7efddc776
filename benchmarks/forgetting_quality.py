"""The NeurIPS 2023 unlearning competition's forgetting score on the demo task.

Triantafillou et al. 2024 ("Are we making progress in unlearning?", arXiv:2406.09073): N models
unlearned from one trained model and N models retrained without the forget set each give one
confidence per forget example; per example a family of threshold attacks bounds an
``(epsilon, delta)`` privacy degree, epsilon buys points (1 below 0.5, halving every 0.5), ``F`` is
the mean over examples, and the final score is
``F x (retain utility unlearned / retrained) x (test utility unlearned / retrained)``. The math is
:mod:`lightning_unlearn.evaluation.forgetting_quality`; this script makes the populations.

Populations (every model is trained, scored in memory and dropped: only its scores are kept, in
``--json``; nothing is written to disk but the results):

* **retrain** (seeds 1..2N): continued pre-training of the base model on ``pretrain_without_forget``
  (retain only, D minus u) with the demo's recipe -- the demo's exact-retrain model, re-run with
  another seed;
* **seen** (seeds 1..N, calibration only): the same recipe on ``pretrain`` (forget + retain) -- the
  demo's seen model, re-run with another seed: "never unlearned";
* **each method** (seeds 1..N): unlearning runs from the *one* seen model of the demo (seed 0),
  through :class:`~lightning_unlearn.workflow.UnlearningWorkflow`: GA+GD (in-distribution retain
  data) stopped at the approximate-retrain target (tolerance as the demo), GA for one epoch (the
  paper's fixed schedule), NPO+GD (in-distribution) stopped at the target, PDU; SimNPO on request;
  per-document targets (#27): DocumentTargetMatching with targets from the never-seen base model
  (DTM+ref) and with quantile targets (DTM), GA+GD with the per-document mask, and DTM+ref with
  every forget document in each step beside a retain batch of 4 (DTM+ref/all), each
  stopped by the per-document stop, with the **held-out retain protocol**: the retain term trains on the even
  retain documents and the retain utility is measured on the odd ones, which no method trained
  on (retrain seeds 1..N are scored on them again: ``retrain_heldout``).

Where the randomness comes from: a seed ``s`` calls ``L.seed_everything(s)`` and sets the data
module's ``seed`` (the forget/training order, reshuffled with ``seed + epoch``, and the retain
stream, ``seed + 1``). The corpus is built once with the demo's seed 0 and is the same for every
model (``demo_corpus`` would build another corpus for another settings seed, so the pieces
``demo_data`` / ``ContinuedPretraining`` / ``cpu_trainer`` are called here directly rather than
``continue_pretraining``, whose cache folder and key would also collide). Every model starts from
the same pre-trained weights and SmolLM2 has no dropout, so **data order is the only randomness**:
the demo's exact retrain is 2 optimiser steps on 16 documents, and seeds only decide which 8
documents make the first batch. If that is too little for the two calibration rows to separate,
``--pretrain-batch-size 2`` (4x the steps, about the same compute) makes the order matter more; the
seen model handed to unlearning is then trained with that recipe too (seed 0, kept in the cache).

Confidence of a forget document: its **mean token log-likelihood** (``-ln`` of its perplexity, what
``Measurement.documents["forget"]["ppl"]`` holds), not the logit of the mean token probability:
it is the quantity the methods optimise and the approximate-retrain target and the loss attack
read (one number across the library); the mean *probability* is dominated by the many near-certain
tokens of code (indentation, closing brackets, repeated names) that every model predicts with
p ~ 1, so its logit compresses exactly the hard tokens on which memorisation shows.

Epsilon's threshold search (``--search``): ``reference`` (the default) is the competition's
``metric.py`` search itself -- thresholds on a grid of 0.01 and the two-threshold rule within a
window of 2.0 of the peakier population's spread -- and its grid and window are then in units of
mean token log-likelihood (nats per token), not the competition's logit-scaled confidences: the
seeds move a document's log-likelihood by a few hundredths, so the 0.01 grid resolves only a few
partitions of the 2N scores. ``every-interval`` takes every pooled score as a threshold and tries
every interval: it depends only on the ranks of the 2N scores (any increasing transform of the
score gives the same epsilon). The table shows both, the chosen one as *F*, the other as
*F (other)*; the peaky-population rule (spreads) is the same in both.

Rows: two calibrations first -- retrain seeds N+1..2N against 1..N (what "indistinguishable"
scores at this N) and seen seeds 1..N against retrain 1..N (what "never unlearned" scores) -- then
each method against retrain 1..N: F, points per example, utility ratios (next-token accuracy on the
retain and on the general split), final score, seconds per model on each side. A permutation null
(the 2N retrain models split at random into two halves) gives the spread of F for indistinguishable
populations; the calibration separates when "never unlearned" scores below its 5th percentile.

Run (about 1.5 hours on 2 quiet cores with N = 8, printed as it goes; one benchmark at a time)::

    python benchmarks/forgetting_quality.py                      # JSON + docs/results.md section
    python benchmarks/forgetting_quality.py --resume             # go on after an interruption
    python benchmarks/forgetting_quality.py --render-only        # re-render from the JSON
    python benchmarks/forgetting_quality.py --smoke --model <tiny model dir> --json /tmp/fq.json
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import forgetting_quality_page as page  # noqa: E402
from forgetting_quality_analysis import DEFAULT_SEARCH, SEARCHES  # noqa: E402
from forgetting_quality_models import (  # noqa: E402
    HELDOUT,
    NEVER_SEEN,
    SCORE_SPLITS,
    heldout,
    pretrain,
    retain_halves,
    scores,
    seen_model,
    unlearn_once,
)
from runs import Method  # noqa: E402

#: the unlearning configurations (``--methods`` by name): ``retain`` trains the retain term on
#: the in-distribution retain split; ``schedule`` stops at the approximate-retrain target or runs
#: one epoch over the forget set (the paper's fixed schedule)
METHODS = {
    m.name: m
    for m in (
        Method("GA+GD", "GradientAscentDescent", "retain", label="GA+GD in-dist, stop at target"),
        Method("GA", "GradientAscent", label="GA, 1 epoch (paper)", schedule="epoch"),
        # NPO (Zhang et al. 2024) with the NLL retain term, the usual baseline since the paper
        Method(
            "NPO+GD",
            "NegativePreferenceOptimization",
            "retain",
            {"retain_term": "nll"},
            label="NPO+GD in-dist, stop at target",
        ),
        Method("SimNPO", "SimNPO", "retain", label="SimNPO in-dist, stop at target"),
        # PDU (2025): the quality benchmark's settings (the paper's TOFU dual settings, the bound
        # 1.1 x the seen model's retain loss), the 2025 method that reached the target in most of
        # that grid's cells
        Method(
            "PDU",
            "PrimalDualUnlearning",
            "retain",
            {"retain_bound": 1.75, "dual_init": 100.0, "dual_lr": 5.0},
            label="PDU in-dist, stop at target",
        ),
    )
}
#: per-document targets (#27), each with the held-out retain protocol (the retain term trains on
#: half of the retain documents, the retain utility is measured on the other half): this
#: library's DocumentTargetMatching with targets from the never-seen base model and with quantile
#: targets, GA+GD with the per-document mask, and GA+GD itself under the same protocol
DOCUMENT_METHODS = (
    Method(
        "DTM+ref",
        "DocumentTargetMatching",
        "retain",
        data=HELDOUT,
        workflow={"documents": {"reference": NEVER_SEEN}},
        label="DTM, targets from the never-seen model (held-out retain)",
    ),
    Method(
        "DTM",
        "DocumentTargetMatching",
        "retain",
        data=HELDOUT,
        workflow={"documents": {}},
        label="DTM, quantile targets (held-out retain)",
    ),
    Method(
        "GA+GD+mask",
        "GradientAscentDescent",
        "retain",
        data=HELDOUT,
        workflow={"documents": {"reference": NEVER_SEEN, "mask": True}},
        label="GA+GD, per-document mask, targets from the never-seen model (held-out retain)",
    ),
    # every forget document in each step (one window each in the demo's corpus) beside a retain
    # batch of the usual 4: each step moves every document towards its own band at once, where
    # a batch of 4 moves the 20 others only as collateral
    Method(
        "DTM+ref/all",
        "DocumentTargetMatching",
        "retain",
        data={**HELDOUT, "batch_size": "all", "retain_batch_size": 4},
        workflow={"documents": {"reference": NEVER_SEEN}},
        label="DTM, targets from the never-seen model, every forget document in each step "
        "(held-out retain)",
    ),
    Method(
        "GA+GD/held-out",
        "GradientAscentDescent",
        "retain",
        data=HELDOUT,
        label="GA+GD in-dist, stop at target (held-out retain)",
    ),
)
METHODS.update({m.name: m for m in DOCUMENT_METHODS})
#: GA+GD/held-out (the same GA+GD under the held-out protocol) on request: not run by default
DEFAULT_METHODS = ("GA+GD", "GA", "NPO+GD", "PDU", "DTM+ref", "GA+GD+mask", "DTM", "DTM+ref/all")
LABELS = {key: m.title for key, m in METHODS.items()}


# ----------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=None, help="models per population (default 8; smoke 3)")
    p.add_argument(
        "--methods",
        nargs="+",
        choices=sorted(METHODS),
        help=f"methods in order (default {' '.join(DEFAULT_METHODS)}; smoke GA+GD)",
    )
    p.add_argument(
        "--search",
        choices=sorted(SEARCHES),
        default=argparse.SUPPRESS,
        help=f"epsilon's threshold search (default {DEFAULT_SEARCH}: the competition's metric.py; "
        "every-interval: every pooled score and interval); with --render-only it re-scores the "
        "JSON (default there: the JSON's own)",
    )
    p.add_argument("--lr", type=float, default=None, help="unlearning lr (default: the demo's)")
    p.add_argument(
        "--max-steps",
        type=int,
        help="most steps of a run stopped at the target (default: the demo's)",
    )
    p.add_argument(
        "--pretrain-batch-size",
        type=int,
        help="batch of the retrain / seen models (default: the demo's); another value trains "
        "this script's own seen model with it (more steps = more data-order randomness)",
    )
    p.add_argument("--pretrain-epochs", type=int, default=None, help="default: the demo's")
    p.add_argument("--null-draws", type=int, default=200, help="permutations of the null")
    p.add_argument("--model", default=None, help="base model folder (default: SmolLM2 from GGUF)")
    p.add_argument("--smoke", action="store_true", help="tiny settings for a test (needs --model)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cache-dir", default=None, help="demo cache (default: the demo's)")
    p.add_argument(
        "--json", default=str(common.ROOT / "benchmarks" / "results" / "forgetting_quality.json")
    )
    p.add_argument("--markdown", default=str(common.ROOT / "docs" / "results.md"))
    p.add_argument("--resume", action="store_true", help="keep the models already in --json")
    common.add_budget_argument(p)
    p.add_argument("--render-only", action="store_true", help="re-render --markdown from --json")
    return p


def _estimate(plan, done_kinds, ratio_seen: float) -> float:
    """Expected seconds of the whole plan from the mean wall time of each kind so far."""
    walls: dict[str, list[float]] = {}
    for kind, wall in done_kinds:
        walls.setdefault(kind, []).append(wall)
    mean = {k: float(np.mean(v)) for k, v in walls.items()}
    methods = [v for k, v in mean.items() if k not in ("retrain", "seen")]

    def guess(kind):
        if kind in mean:
            return mean[kind]
        if kind == "seen":
            return mean.get("retrain", 60.0) * ratio_seen
        if methods:
            return float(np.mean(methods))
        if "seen" in mean:  # an unlearning run costs about a seen model (the demo: ~2 min)
            return mean["seen"]
        return mean["retrain"] * ratio_seen if "retrain" in mean else 120.0

    return sum(guess(kind) for kind, _ in plan)


def _settings(args, json_path: Path):
    """The demo settings, the models per population, the methods, the lr and the step limit."""
    from lightning_unlearn.demo import DemoSettings

    if args.smoke:
        if not args.model:
            raise SystemExit("--smoke needs --model <tiny model folder>")
        settings = common.smoke_settings(args.cache_dir or json_path.parent / "fq-cache")
        n, methods = args.n or 3, args.methods or ["GA+GD"]
        lr, max_steps = args.lr or 1e-3, args.max_steps or 3
    else:
        settings = DemoSettings(**({"cache_dir": args.cache_dir} if args.cache_dir else {}))
        n, methods = args.n or 8, args.methods or list(DEFAULT_METHODS)
        lr, max_steps = args.lr or settings.unlearn_lr, args.max_steps or settings.max_unlearn_steps
    if n < 3:
        raise SystemExit(f"--n must be >= 3 (ln(N - 1) must be > 0 for any point), got {n}")
    return settings, n, methods, lr, max_steps


def _render_only(args, json_path: Path, md_path: Path) -> int:
    """Re-score the stored confidences (``--search`` picks the search) and re-render."""
    from lightning_unlearn import version

    results = json.loads(json_path.read_text())
    options = results["options"]
    if "search" not in options:  # made before 0.2.0: every interval, re-scored by default
        options.pop("window", None)
        options["search"] = DEFAULT_SEARCH
    if hasattr(args, "search"):
        options["search"] = args.search
    now = common.provenance()
    results["rendered"] = {
        "date": now["date"],
        "commit": now["commit"],
        "library": version.__version__,
    }
    page.write(results, json_path, md_path, LABELS)
    return 0


def _runs(previous: dict | None, models: dict) -> list[dict]:
    """Every invocation's wall time and machine so far (a resumed benchmark took the sum)."""
    runs = list((previous or {}).get("runs") or [])
    if previous is not None and not runs and models:  # runs from before runs were recorded
        runs.append(
            {
                "date": previous["provenance"]["date"],
                "commit": previous["provenance"]["commit"],
                "host": None,
                "models": sum(len(ms) for ms in models.values()),
                "seconds": sum(m.get("wall_seconds", 0.0) for ms in models.values() for m in ms),
                "models_only": True,  # the sum of the models' wall times: setup left out
            }
        )
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    json_path, md_path = Path(args.json), Path(args.markdown)
    if args.render_only:
        return _render_only(args, json_path, md_path)
    from lightning_unlearn.demo import demo_data, quiet
    from lightning_unlearn.evaluation.perplexity import Perplexity
    from lightning_unlearn.workflow import UnlearningWorkflow

    quiet()
    threads = common.set_threads(args.threads)
    settings, n, methods, lr, max_steps = _settings(args, json_path)
    demo_recipe = {"batch_size": settings.pretrain_batch_size, "epochs": settings.pretrain_epochs}
    recipe = {
        "batch_size": args.pretrain_batch_size or demo_recipe["batch_size"],
        "epochs": args.pretrain_epochs or demo_recipe["epochs"],
    }
    started = time.perf_counter()
    task = common.DemoTask.build(settings, base_model=args.model)
    seen_dir = seen_model(task, recipe, demo_recipe)
    # what makes stored scores reusable: the task, the recipes and the scoring
    identity = {
        "settings": dataclasses.asdict(settings),
        "recipe": recipe,
        "lr": lr,
        "max_steps": max_steps,
        "base_model": str(task.base_dir),
        "seen_model": str(seen_dir),
        "corpus_manifest": json.loads((task.corpus / "manifest.json").read_text())["files"],
        "confidence": "mean token log-likelihood",
    }
    previous = common.previous_results(json_path, args.resume, identity=identity)
    models: dict[str, list[dict]] = (previous or {}).get("models") or {}
    runs = _runs(previous, models)
    provenance = common.provenance()
    this_run = {
        "date": provenance["date"],
        "commit": provenance["commit"],
        "host": common.host_id(),
        "models": 0,
        "seconds": 0.0,
    }
    runs.append(this_run)
    options = {
        "n": n,
        "methods": methods,
        "search": getattr(args, "search", DEFAULT_SEARCH),
        "lr": lr,
        "max_steps": max_steps,
        "recipe": recipe,
        "demo_recipe": demo_recipe,
        "threads": threads,
        "null_draws": args.null_draws,
        "smoke": args.smoke,
    }
    results: dict[str, Any] = {
        "provenance": provenance,
        "identity": identity,
        "settings": dataclasses.asdict(settings),
        "options": options,
        "models": models,
        "runs": runs,
        "complete": False,
    }
    # the seen model's measurement: the approximate-retrain target of every unlearning run
    full = demo_data(
        seen_dir,
        task.corpus,
        settings,
        train="forget",
        batch_size=settings.unlearn_batch_size,
        retain=True,
        eval_batch_size=8,
    )
    before = UnlearningWorkflow(
        metrics=[Perplexity()], score_cache=Path(settings.cache_dir) / "scores", verbose=False
    ).measure_checkpoint(seen_dir, full)  # a throw-away workflow: it keeps the model it loads
    scorer = UnlearningWorkflow(metrics=[Perplexity()], verbose=False)  # models in memory
    results["target_ppl"] = before.values["approximate/ppl"]
    results["seen_model"] = {"path": str(seen_dir), **scores(before)}
    doc_index = results["seen_model"]["doc_index"]
    # the populations' scoring: the base model's data module (pre-training needs no retain term)
    score_data = functools.partial(
        demo_data,
        task.base_dir,
        task.corpus,
        settings,
        train="forget",
        batch_size=settings.unlearn_batch_size,
        retain=False,
        eval_splits=SCORE_SPLITS,
        eval_batch_size=8,
    )
    scored = score_data()
    print(
        f"target (seen model's approximate ppl) {results['target_ppl']:.3f}; N = {n}; "
        f"methods {methods}; recipe {recipe}",
        flush=True,
    )

    plan = [("retrain", seed) for seed in range(1, 2 * n + 1)]
    plan += [("seen", seed) for seed in range(1, n + 1)]
    held_out = any(heldout(METHODS[key]) for key in methods)
    if held_out:  # retrain seeds 1..N again, their retain utility on the held-out documents
        plan += [("retrain_heldout", seed) for seed in range(1, n + 1)]
        heldout_data = score_data(eval_retain=retain_halves(task)["retain_heldout"])
    reference = None
    if any(
        (METHODS[k].workflow.get("documents") or {}).get("reference") == NEVER_SEEN for k in methods
    ):
        reference = UnlearningWorkflow(metrics=[Perplexity()], verbose=False).measure_checkpoint(
            task.base_dir, full, generation=False, splits=["forget", "approximate"]
        )
    plan += [(key, seed) for key in methods for seed in range(1, n + 1)]
    todo = [(k, seed) for k, seed in plan if seed not in {m["seed"] for m in models.get(k, [])}]
    # a seen model trains on more documents than a retrain model: its time before it is measured
    sizes = {
        t: len((task.corpus / f"{t}.jsonl").read_text().splitlines())
        for t in ("pretrain", "pretrain_without_forget")
    }
    ratio_seen = sizes["pretrain"] / max(1, sizes["pretrain_without_forget"])
    print(
        f"{len(plan) - len(todo)} of {len(plan)} models already scored; {len(todo)} to go",
        flush=True,
    )
    # wall seconds of the models scored so far (a resumed run estimates from them too)
    walls = [(k, m["wall_seconds"]) for k, ms in models.items() for m in ms if "wall_seconds" in m]
    page.write(results, json_path, md_path, LABELS)
    budget = common.Budget(args.budget_minutes)
    for i, (kind, seed) in enumerate(budget.units(todo, "forgetting_quality.py"), 1):
        t = time.perf_counter()
        if kind in ("retrain", "seen", "retrain_heldout"):
            train = "pretrain" if kind == "seen" else "pretrain_without_forget"
            data = heldout_data if kind == "retrain_heldout" else scored
            record = pretrain(
                task, train=train, seed=seed, recipe=recipe, scorer=scorer, score_data=data
            )
        else:
            record = unlearn_once(
                task,
                METHODS[kind],
                seed=seed,
                seen_dir=seen_dir,
                before=before,
                lr=lr,
                max_steps=max_steps,
                reference=reference,
            )
        if record.pop("doc_index") != doc_index:
            raise RuntimeError(
                f"{kind} seed {seed} scored other forget documents than the seen model: the "
                "corpus or its tokenisation changed; start again without --resume"
            )
        wall = time.perf_counter() - t
        record.update(wall_seconds=wall, host=this_run["host"])
        models.setdefault(kind, []).append(record)
        walls.append((kind, wall))
        this_run["models"] += 1
        this_run["seconds"] = time.perf_counter() - started
        page.write(results, json_path, md_path, LABELS)  # partial results survive an interruption
        elapsed = time.perf_counter() - started
        expected = elapsed + _estimate(todo[i:], walls, ratio_seen)
        stop = record.get("stopped_step") is not None or record.get("reached_target") is False
        extra = f", stop {record['stopped_step']}" if stop else ""
        print(
            f"[{i}/{len(todo)}] {kind} seed {seed}: {wall:.0f} s ({record['steps']} steps, "
            f"{record['seconds']:.0f} s training{extra}), forget ppl "
            f"{common.fmt(record['forget_ppl'])}; elapsed {elapsed / 60:.1f} min, expected total "
            f"≈ {expected / 60:.1f} min",
            flush=True,
        )
    if budget.stopped:  # each finished model is already in --json
        return 0
    results["complete"] = True
    this_run["seconds"] = time.perf_counter() - started
    results["total_seconds"] = sum(r["seconds"] for r in runs)
    page.write(results, json_path, md_path, LABELS)
    for r in results["rows"]:
        print(f"{r['label']}: F {r['F']:.3f}, score {common.fmt(r['score'], 3)}", flush=True)
    print(
        f"calibration separated: {results['verdict'].get('separated')}; wrote {json_path} and "
        f"{md_path} in {results['total_seconds']:.0f} s",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
