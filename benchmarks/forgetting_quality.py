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
  paper's fixed schedule), NPO+GD (in-distribution) stopped at the target; SimNPO on request.

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
import gc
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

MARKER = "forgetting_quality"
#: the splits a model is scored on: forget (confidences), retain and general (utilities)
SCORE_SPLITS = ("forget", "retain", "general")
PLOT_NAME = "results_forgetting_quality.png"
#: a diverged model's confidence where its log-likelihood is not finite (maximally unlike retrain)
DIVERGED_CONFIDENCE = -50.0
#: epsilon's threshold search: the competition's ``metric.py`` (default) or every interval
SEARCHES = {
    "reference": {"thresholds": "grid", "window": 2.0},
    "every-interval": {"thresholds": "exact", "window": None},
}
DEFAULT_SEARCH = "reference"
#: the reference's peaky-population ratio (``forgetting_quality._PEAKY_RATIO``)
PEAKY_RATIO = 0.01


@dataclasses.dataclass(frozen=True)
class Method:
    """One unlearning configuration of the benchmark.

    Attributes:
        key: the name on the command line and in the JSON.
        label: what the tables call it.
        class_name: the ``lightning_unlearn`` class.
        retain: trains a retain term on the in-distribution retain split.
        schedule: ``"target"`` (stop at the approximate-retrain target) or ``"epoch"`` (one epoch
            over the forget set, the paper's fixed schedule).
        kwargs: more constructor arguments.
    """

    key: str
    label: str
    class_name: str
    retain: bool
    schedule: str
    kwargs: tuple[tuple[str, Any], ...] = ()


METHODS = {
    m.key: m
    for m in (
        Method("GA+GD", "GA+GD in-dist, stop at target", "GradientAscentDescent", True, "target"),
        Method("GA", "GA, 1 epoch (paper)", "GradientAscent", False, "epoch"),
        # NPO (Zhang et al. 2024) with the NLL retain term, the usual baseline since the paper
        Method(
            "NPO+GD",
            "NPO+GD in-dist, stop at target",
            "NegativePreferenceOptimization",
            True,
            "target",
            (("retain_term", "nll"),),
        ),
        Method("SimNPO", "SimNPO in-dist, stop at target", "SimNPO", True, "target"),
        # PDU (2025): the quality benchmark's settings (the paper's TOFU dual settings, the bound
        # 1.1 x the seen model's retain loss), the 2025 method that reached the target in most of
        # that grid's cells
        Method(
            "PDU",
            "PDU in-dist, stop at target",
            "PrimalDualUnlearning",
            True,
            "target",
            (("retain_bound", 1.75), ("dual_init", 100.0), ("dual_lr", 5.0)),
        ),
    )
}
DEFAULT_METHODS = ("GA+GD", "GA", "NPO+GD", "PDU")


# ----------------------------------------------------------------------------------- training
def _clock():
    """A callback summing the seconds of the training steps (data loading and evaluation out)."""
    from lightning.pytorch import Callback

    class StepClock(Callback):
        seconds = 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self._t = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.seconds += time.perf_counter() - self._t

    return StepClock()


def _scores(measurement) -> dict[str, Any]:
    """Confidences (mean token log-likelihood per forget document) and utilities of one model
    from a workflow measurement; a non-finite log-likelihood (a diverged model) counts as
    :data:`DIVERGED_CONFIDENCE`."""
    forget = measurement.documents["forget"]
    confidence = []
    for ppl in forget["ppl"]:
        value = -math.log(ppl) if ppl and math.isfinite(ppl) and ppl > 0 else math.nan
        confidence.append(value if math.isfinite(value) else DIVERGED_CONFIDENCE)
    v = measurement.values
    return {
        "doc_index": list(forget["doc_index"]),
        "confidence": confidence,
        "forget_ppl": common.finite(v.get("forget/ppl")),
        "retain_ppl": common.finite(v.get("retain/ppl")),
        "general_ppl": common.finite(v.get("general/ppl")),
        "retain_acc": common.finite(v.get("retain/acc")),
        "general_acc": common.finite(v.get("general/acc")),
    }


def pretrain(task, *, train: str, seed: int, recipe: dict, scorer, score_data, export=None):
    """Continued pre-training of the base model on ``corpus/<train>.jsonl`` with ``seed`` (data
    order), scored in memory on :data:`SCORE_SPLITS`; with ``export`` the model is saved there."""
    import lightning as L

    from lightning_unlearn.demo import cpu_trainer, demo_data
    from lightning_unlearn.pretraining import ContinuedPretraining

    s = task.settings
    L.seed_everything(seed, verbose=False)
    data = demo_data(
        task.base_dir, task.corpus, s, train=train, batch_size=recipe["batch_size"],
        retain=False, seed=seed, eval_splits=SCORE_SPLITS,
    )  # fmt: skip
    module = ContinuedPretraining(
        str(task.base_dir), learning_rate=s.pretrain_lr, warmup_ratio=0.0, scheduler="constant"
    )
    clock = _clock()
    trainer = cpu_trainer(max_epochs=recipe["epochs"], limit_val_batches=0, callbacks=[clock])
    started = time.perf_counter()
    trainer.fit(module, datamodule=data)
    fit_seconds = time.perf_counter() - started
    out = {"seed": seed, "steps": int(trainer.global_step), "train_seconds": clock.seconds,
           "fit_seconds": fit_seconds, "seconds": clock.seconds}  # fmt: skip
    if export is not None:
        module.export(export, overwrite=True)
    else:
        out.update(_scores(scorer.measure_checkpoint(module, score_data)))
    del module, trainer, data
    gc.collect()
    return out


def unlearn(task, method: Method, *, seed: int, seen_dir: Path, before, lr: float, max_steps: int):
    """One unlearning run of ``method`` from the seen model with ``seed`` (data order and
    ``seed_everything``), through ``UnlearningWorkflow.run``; the unlearned model is scored in
    memory (the workflow's measurement after) and dropped."""
    import lightning as L

    import lightning_unlearn
    from lightning_unlearn.demo import cpu_trainer, demo_data
    from lightning_unlearn.evaluation.perplexity import Perplexity
    from lightning_unlearn.methods import DivergenceError
    from lightning_unlearn.workflow import UnlearningWorkflow

    s = task.settings
    L.seed_everything(seed, verbose=False)
    # approximate is not scored here: the target is the seen model's, measured once (``before``)
    data = demo_data(
        seen_dir, task.corpus, s, train="forget", batch_size=s.unlearn_batch_size,
        retain=method.retain, seed=seed, eval_splits=SCORE_SPLITS, eval_batch_size=8,
    )  # fmt: skip
    module = getattr(lightning_unlearn, method.class_name)(
        str(seen_dir), learning_rate=lr, warmup_ratio=0.0, scheduler="constant",
        **dict(method.kwargs),
    )  # fmt: skip
    at_target = method.schedule == "target"
    workflow = UnlearningWorkflow(
        metrics=[Perplexity()], stop_at_target=at_target, tolerance=s.target_tolerance,
        checks="fixed", verbose=False,  # every step: the stored models were checked so
    )  # fmt: skip
    if at_target:
        trainer = cpu_trainer(
            max_steps=max_steps, max_epochs=-1, val_check_interval=s.val_every,
            check_val_every_n_epoch=None, callbacks=[workflow],
        )  # fmt: skip
    else:  # one epoch, no checks (validation would come after epoch 2)
        trainer = cpu_trainer(max_epochs=1, check_val_every_n_epoch=2, callbacks=[workflow])
    started = time.perf_counter()
    diverged = None
    try:
        workflow.run(trainer, module, data, before=before, export=False)
        after = workflow.after
    except DivergenceError as err:  # scored as it is: a diverged model is what the method made
        diverged = str(err).split(";")[0]
        after = workflow.measure_checkpoint(module, data)
    wall = time.perf_counter() - started
    checks = workflow.seconds["checks"]
    stopped = workflow.stop.stopped_step if workflow.stop is not None else None
    out = {
        "seed": seed,
        "steps": int(trainer.global_step),
        "stopped_step": stopped,
        "reached_target": stopped is not None if at_target else None,
        "diverged": diverged,
        "train_seconds": workflow.train_seconds,
        "check_seconds": checks,
        # what the unlearning algorithm costs: its steps and, at the target, the checks it needs
        "seconds": workflow.train_seconds + checks,
        "fit_seconds": wall - workflow.seconds["after"],
        **_scores(after),
    }
    del module, trainer, data, workflow
    gc.collect()
    return out


def seen_model(task, recipe: dict, demo_recipe: dict) -> Path:
    """The one model handed to unlearning: the demo's seen model, or with another recipe this
    script's own (seed 0, cached under the demo cache by its settings)."""
    from lightning_unlearn.demo import settings_key

    if recipe == demo_recipe:
        return Path(task.seen_dir)
    s = task.settings
    key = settings_key(
        str(task.base_dir), (task.corpus / "manifest.json").read_text(), "pretrain",
        s.max_length, recipe, s.pretrain_lr, 0,
    )  # fmt: skip
    out = (
        Path(s.cache_dir)
        / "forgetting-quality"
        / f"seen-b{recipe['batch_size']}-e{recipe['epochs']}"
    )
    stamp = out / "lightning_unlearn_settings.sha"
    if not (stamp.is_file() and stamp.read_text() == key):
        print(f"training the seen model with {recipe} (seed 0) into {out}", flush=True)
        pretrain(task, train="pretrain", seed=0, recipe=recipe, scorer=None, score_data=None,
                 export=out)  # fmt: skip
        stamp.write_text(key)
    return out


# ----------------------------------------------------------------------------------- analysis
def _matrix(models: list[dict]) -> np.ndarray:
    return np.array([m["confidence"] for m in models], dtype=np.float64)


def _mean(models: list[dict], key: str) -> float | None:
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
) -> dict:
    """F, epsilon and points per example, utility ratios, score and seconds of one row.

    ``timed``: the retrain models whose seconds per model are the retrain side's (every retrain
    model's time measures the same recipe, whichever seeds the row compares)."""
    from lightning_unlearn.evaluation.forgetting_quality import (
        competition_score,
        epsilon_per_example,
        points,
    )

    n = min(len(unlearned), len(retrained))
    u, r = unlearned[:n], retrained[:n]
    eps = epsilon_per_example(_matrix(u), _matrix(r), **SEARCHES[search])
    # the reference's peaky rule (epsilon = cap when one spread is < 1% of the other's)
    spread_u, spread_r = np.ptp(_matrix(u), axis=0), np.ptp(_matrix(r), axis=0)
    peaky = np.minimum(spread_u, spread_r) < PEAKY_RATIO * np.maximum(spread_u, spread_r)
    pts = points(eps, n)
    other = _other_search(search)
    eps_other = epsilon_per_example(_matrix(u), _matrix(r), **SEARCHES[other])
    f = float(pts.mean())
    utilities = {k: (_mean(u, k), _mean(r, k)) for k in ("retain_acc", "general_acc")}
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
        "unlearned": _mean(u, "seconds"),
        "retrained": _mean(r, "seconds"),
    }


def _other_search(search: str) -> str:
    return next(k for k in SEARCHES if k != search)


def null_distribution(retrain: list[dict], n: int, *, draws: int, search: str) -> dict:
    """F of two halves of the 2n retrain models drawn at random: indistinguishable by
    construction, so its spread is what F means at this n."""
    from lightning_unlearn.evaluation.forgetting_quality import forgetting_quality

    pool = _matrix(retrain[: 2 * n])
    rng = np.random.default_rng(0)
    values = []
    for _ in range(draws):
        order = rng.permutation(2 * n)
        values.append(forgetting_quality(pool[order[:n]], pool[order[n:]], **SEARCHES[search]))
    p5, p50, p95 = np.percentile(values, [5, 50, 95])
    return {"n": n, "draws": draws, "p5": float(p5), "median": float(p50), "p95": float(p95),
            "mean": float(np.mean(values))}  # fmt: skip


def analyse(results: dict[str, Any]) -> None:
    """Rows, the permutation null and the calibration verdict from the stored scores."""
    n, search = results["options"]["n"], results["options"]["search"]
    models = results["models"]
    retrain = sorted(models.get("retrain", []), key=lambda m: m["seed"])
    first = [m for m in retrain if m["seed"] <= n]
    second = [m for m in retrain if n < m["seed"] <= 2 * n]
    rows = []

    def add(kind, key, label, unlearned, retrained, planned):
        if min(len(unlearned), len(retrained)) >= 2:
            row = compare(unlearned, retrained, search=search, timed=retrain)
            rows.append({"kind": kind, "key": key, "label": label, "planned": planned, **row})

    add("calibration", "retrain", f"retrain seeds {n + 1}–{2 * n} vs retrain 1–{n} "
        "(indistinguishable)", second, first, n)  # fmt: skip
    seen = sorted(models.get("seen", []), key=lambda m: m["seed"])
    add("calibration", "seen", f"seen seeds 1–{n} vs retrain 1–{n} (never unlearned)", seen,
        first, n)  # fmt: skip
    for key in results["options"]["methods"]:
        runs = sorted(models.get(key, []), key=lambda m: m["seed"])
        add("method", key, METHODS[key].label, runs, first, n)
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
        results["null"] = {**null_distribution(first + second, k, draws=draws, search=search),
                           "key": key}  # fmt: skip
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


# ----------------------------------------------------------------------------------- rendering
def _f(x, digits=3):
    return common.fmt(x, digits)


def _sec(x):
    return "—" if x is None else f"{x:.1f}" if x < 10 else f"{x:.0f}"


def _population_rows(results) -> list[str]:
    lines = [
        "| population | models | steps | forget ppl (min–max) | confidence spread | retain acc | "
        "general acc | s per model (steps + checks) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = {"retrain": "retrain (D \\ u)", "seen": "seen (D)"}
    names.update({k: METHODS[k].label for k in results["options"]["methods"]})
    for key, name in names.items():
        models = results["models"].get(key) or []
        if not models:
            continue
        ppl = [m["forget_ppl"] for m in models if m.get("forget_ppl")]
        steps = sorted({m["steps"] for m in models})
        spread = float(np.mean(np.std(_matrix(models), axis=0))) if len(models) > 1 else None
        reached = [m for m in models if m.get("reached_target") is False]
        diverged = [m for m in models if m.get("diverged")]
        note = "".join(
            [f"; {len(reached)} missed the target" if reached else "",
             f"; {len(diverged)} diverged" if diverged else ""]
        )  # fmt: skip
        lines.append(
            f"| {name} | {len(models)} | {', '.join(map(str, steps))}{note} | "
            f"{_f(float(np.mean(ppl)), 2)} ({_f(min(ppl), 2)}–{_f(max(ppl), 2)}) | "
            f"{_f(spread, 4)} | {_f(_mean(models, 'retain_acc'))} | "
            f"{_f(_mean(models, 'general_acc'))} | {_sec(_mean(models, 'seconds'))} |"
        )
    return lines


def _mixed_hosts(results) -> bool:
    """Were the models trained on more than one machine (a run resumed elsewhere)?"""
    return len({m.get("host") for ms in results["models"].values() for m in ms}) > 1


def _left(results) -> dict[str, int]:
    """The models the plan still needs, by population."""
    o = results["options"]
    n = o["n"]
    wanted = {"retrain": 2 * n, "seen": n, **{m: n for m in o["methods"]}}
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
    return (
        "no method meets it: retraining on the demo task is only "
        f"{_sec(rows[0]['seconds_retrained'])} s of steps, and the unlearning runs take "
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


def render(results: dict[str, Any]) -> str:
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
    win, other = searches[search], searches[_other_search(search)]
    recipe = o["recipe"]
    if recipe == o["demo_recipe"]:
        recipe_text = "the demo's exact-retrain recipe"
    else:  # more data-order randomness than the demo's; the seen model for unlearning too
        recipe_text = (
            f"the demo's exact-retrain recipe with batch {recipe['batch_size']} / "
            f"{recipe['epochs']} epoch(s) instead of {o['demo_recipe']['batch_size']} / "
            f"{o['demo_recipe']['epochs']}, the seen model handed to unlearning trained likewise"
        )
    planned = 2 * n + n + n * len(o["methods"])
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
        f"| row | N | F | points per example ({buckets}) | peaky | F (other) | retain acc ratio | "
        "general acc ratio | score | s per model, unlearned side | s per model, retrain | "
        "time ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    mixed = _mixed_hosts(results)  # then each row says how many models its time ratio compares
    for r in results["rows"]:
        partial = "" if r["n"] >= r["planned"] else f" (partial: {r['n']} of {r['planned']})"
        time_ratio = "—" if r["kind"] == "calibration" else common.fmt(r["time_ratio"], 2)
        timed = r.get("timed_models")
        if r["kind"] != "calibration" and timed and mixed:
            time_ratio += f" (one machine: {timed[0]} vs {timed[1]} models)"
        lines.append(
            f"| {r['label']}{partial} | {r['n']} | **{_f(r['F'])}** | {_histogram(r)} | "
            f"{r['peaky_examples']} | {_f(r['F_other'])} | {_f(r['retain_ratio'])} | {_f(r['general_ratio'])} | "
            f"{_f(r['score'])} | {_sec(r['seconds_unlearned'])} | {_sec(r['seconds_retrained'])} | "
            f"{time_ratio} |"
        )
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
    lines += _population_rows(results)
    lines += [
        "",
        "*Confidence spread*: the standard deviation over a population's models of a document's "
        "mean log-likelihood, averaged over documents (how much the seeds move the models).",
        "",
    ]
    if results.get("plot"):
        lines += [f"![points per example and F per row]({results['plot']})", ""]
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
    fig.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(folder / PLOT_NAME)
    return PLOT_NAME


def write(results: dict[str, Any], json_path: Path, md_path: Path) -> None:
    """Analyse, plot, and write the JSON and the markdown section (after every model)."""
    analyse(results)
    results["plot"] = plot(results, md_path.parent)
    common.write_json(json_path, results)
    common.replace_section(
        md_path, MARKER, render(results), title="Results: unlearning quality on the demo task"
    )


# ----------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=None, help="models per population (default 8; smoke 3)")
    p.add_argument(
        "--methods", nargs="+", default=None, choices=sorted(METHODS),
        help=f"methods in order (default {' '.join(DEFAULT_METHODS)}; smoke GA+GD)",
    )  # fmt: skip
    p.add_argument(
        "--search", choices=sorted(SEARCHES), default=argparse.SUPPRESS,
        help=f"epsilon's threshold search (default {DEFAULT_SEARCH}: the competition's metric.py; "
        "every-interval: every pooled score and interval); with --render-only it re-scores the "
        "JSON (default there: the JSON's own)",
    )  # fmt: skip
    p.add_argument("--lr", type=float, default=None, help="unlearning lr (default: the demo's)")
    p.add_argument(
        "--max-steps", type=int, default=None,
        help="most steps of a run stopped at the target (default: the demo's)",
    )  # fmt: skip
    p.add_argument(
        "--pretrain-batch-size", type=int, default=None,
        help="batch of the retrain / seen models (default: the demo's); another value trains "
        "this script's own seen model with it (more steps = more data-order randomness)",
    )  # fmt: skip
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    json_path, md_path = Path(args.json), Path(args.markdown)
    if args.render_only:
        results = json.loads(json_path.read_text())
        options = results["options"]
        if "search" not in options:  # made before 0.2.0: every interval, re-scored by default
            options.pop("window", None)
            options["search"] = DEFAULT_SEARCH
        if hasattr(args, "search"):
            options["search"] = args.search
        from lightning_unlearn import version

        now = common.provenance()
        results["rendered"] = {
            "date": now["date"],
            "commit": now["commit"],
            "library": version.__version__,
        }
        write(results, json_path, md_path)
        return 0
    from lightning_unlearn.demo import DemoSettings, quiet
    from lightning_unlearn.evaluation.perplexity import Perplexity
    from lightning_unlearn.workflow import UnlearningWorkflow

    quiet()
    threads = common.set_threads(args.threads)
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
        "settings": dataclasses.asdict(settings), "recipe": recipe, "lr": lr,
        "max_steps": max_steps, "base_model": str(task.base_dir), "seen_model": str(seen_dir),
        "corpus_manifest": json.loads((task.corpus / "manifest.json").read_text())["files"],
        "confidence": "mean token log-likelihood",
    }  # fmt: skip
    previous = json.loads(json_path.read_text()) if args.resume and json_path.exists() else None
    if previous is not None and previous.get("identity") != identity:
        raise SystemExit(
            f"--resume: {json_path} was made with other settings, recipe, learning rate or corpus; "
            "run without --resume (or with another --json) to start again"
        )
    models: dict[str, list[dict]] = (previous or {}).get("models") or {}
    # every invocation's wall time and machine: a resumed benchmark took the sum
    runs: list[dict] = list((previous or {}).get("runs") or [])
    if previous is not None and not runs and models:  # runs from before runs were recorded
        runs.append({
            "date": previous["provenance"]["date"], "commit": previous["provenance"]["commit"],
            "host": None, "models": sum(len(ms) for ms in models.values()),
            "seconds": sum(m.get("wall_seconds", 0.0) for ms in models.values() for m in ms),
            "models_only": True,  # the sum of the models' wall times: setup left out
        })  # fmt: skip
    provenance = common.provenance()
    this_run = {"date": provenance["date"], "commit": provenance["commit"],
                "host": common.host_id(), "models": 0, "seconds": 0.0}  # fmt: skip
    runs.append(this_run)
    results: dict[str, Any] = {
        "provenance": provenance,
        "identity": identity,
        "settings": dataclasses.asdict(settings),
        "options": {
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
        },
        "models": models,
        "runs": runs,
        "complete": False,
    }
    # the seen model's measurement: the approximate-retrain target of every unlearning run
    from lightning_unlearn.demo import demo_data

    full = demo_data(seen_dir, task.corpus, settings, train="forget",
                     batch_size=settings.unlearn_batch_size, retain=True, eval_batch_size=8)  # fmt: skip
    before = UnlearningWorkflow(
        metrics=[Perplexity()], score_cache=Path(settings.cache_dir) / "scores", verbose=False
    ).measure_checkpoint(seen_dir, full)  # a throw-away workflow: it keeps the model it loads
    scorer = UnlearningWorkflow(metrics=[Perplexity()], verbose=False)  # models in memory
    results["target_ppl"] = before.values["approximate/ppl"]
    results["seen_model"] = {"path": str(seen_dir), **_scores(before)}
    doc_index = results["seen_model"]["doc_index"]
    score_data = demo_data(task.base_dir, task.corpus, settings, train="forget",
                           batch_size=settings.unlearn_batch_size, retain=False,
                           eval_splits=SCORE_SPLITS, eval_batch_size=8)  # fmt: skip
    print(f"target (seen model's approximate ppl) {results['target_ppl']:.3f}; N = {n}; "
          f"methods {methods}; recipe {recipe}", flush=True)  # fmt: skip

    plan = [("retrain", seed) for seed in range(1, 2 * n + 1)]
    plan += [("seen", seed) for seed in range(1, n + 1)]
    plan += [(key, seed) for key in methods for seed in range(1, n + 1)]
    todo = [(k, seed) for k, seed in plan if seed not in {m["seed"] for m in models.get(k, [])}]
    # a seen model trains on more documents than a retrain model: its time before it is measured
    sizes = {t: len((task.corpus / f"{t}.jsonl").read_text().splitlines())
             for t in ("pretrain", "pretrain_without_forget")}  # fmt: skip
    ratio_seen = sizes["pretrain"] / max(1, sizes["pretrain_without_forget"])
    print(f"{len(plan) - len(todo)} of {len(plan)} models already scored; {len(todo)} to go",
          flush=True)  # fmt: skip
    # wall seconds of the models scored so far (a resumed run estimates from them too)
    walls = [(k, m["wall_seconds"]) for k, ms in models.items() for m in ms if "wall_seconds" in m]
    write(results, json_path, md_path)
    budget = common.Budget(args.budget_minutes)
    for i, (kind, seed) in enumerate(todo, 1):
        if i > 1 and budget.spent():  # each finished model is already in --json
            print(budget.stop_line(i - 1, len(todo) - i + 1, "forgetting_quality.py"), flush=True)
            return 0
        t = time.perf_counter()
        if kind in ("retrain", "seen"):
            train = "pretrain_without_forget" if kind == "retrain" else "pretrain"
            record = pretrain(task, train=train, seed=seed, recipe=recipe, scorer=scorer,
                              score_data=score_data)  # fmt: skip
        else:
            record = unlearn(task, METHODS[kind], seed=seed, seen_dir=seen_dir, before=before,
                             lr=lr, max_steps=max_steps)  # fmt: skip
        if record["doc_index"] != doc_index:
            raise RuntimeError(
                f"{kind} seed {seed} scored other forget documents than the seen model: the "
                "corpus or its tokenisation changed; start again without --resume"
            )
        del record["doc_index"]
        wall = time.perf_counter() - t
        record["wall_seconds"] = wall
        record["host"] = this_run["host"]
        models.setdefault(kind, []).append(record)
        walls.append((kind, wall))
        this_run["models"] += 1
        this_run["seconds"] = time.perf_counter() - started
        write(results, json_path, md_path)  # partial results survive an interruption
        elapsed = time.perf_counter() - started
        expected = elapsed + _estimate(todo[i:], walls, ratio_seen)
        extra = ""
        if record.get("stopped_step") is not None or record.get("reached_target") is False:
            extra = f", stop {record['stopped_step']}"
        print(
            f"[{i}/{len(todo)}] {kind} seed {seed}: {wall:.0f} s ({record['steps']} steps, "
            f"{record['seconds']:.0f} s training{extra}), forget ppl "
            f"{common.fmt(record['forget_ppl'])}; elapsed {elapsed / 60:.1f} min, expected total "
            f"≈ {expected / 60:.1f} min",
            flush=True,
        )
    results["complete"] = True
    this_run["seconds"] = time.perf_counter() - started
    results["total_seconds"] = sum(r["seconds"] for r in runs)
    write(results, json_path, md_path)
    for r in results["rows"]:
        print(f"{r['label']}: F {r['F']:.3f}, score {common.fmt(r['score'], 3)}", flush=True)
    print(f"calibration separated: {results['verdict'].get('separated')}; wrote {json_path} and "
          f"{md_path} in {results['total_seconds']:.0f} s", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
