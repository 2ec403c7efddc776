"""How each model of the forgetting-quality benchmark is made and scored: continued pre-training
with a seed (the retrain and seen populations), an unlearning run of a method row with a seed, and
the one seen model handed to unlearning. Every model is scored in memory and dropped."""

from __future__ import annotations

import dataclasses
import gc
import math
import time
from pathlib import Path
from typing import Any

import common
from runs import Method, step_clock, unlearn

#: the splits a model is scored on: forget (confidences), retain and general (utilities)
SCORE_SPLITS = ("forget", "retain", "general")
#: a diverged model's confidence where its log-likelihood is not finite (maximally unlike retrain)
DIVERGED_CONFIDENCE = -50.0


#: a row's ``documents: {"reference": ...}`` with this value: the base model before continued
#: pre-training (it never saw the forget documents), measured once per invocation
NEVER_SEEN = "never-seen"
#: a row's data options for the held-out retain protocol: the retain term trains on the even
#: retain documents, the retain utility is measured on the odd ones (no method trained on them;
#: every retrain and seen model did: they are pre-training data)
HELDOUT = {"retain_documents": "retain_train", "eval_retain": "retain_heldout"}


def retain_halves(task) -> dict[str, str]:
    """``{"retain_train": path, "retain_heldout": path}``: the demo corpus's retain documents in
    source order, even positions and odd positions (written once beside the benchmark's cache)."""
    lines = (task.corpus / "retain.jsonl").read_text().splitlines()
    folder = Path(task.settings.cache_dir) / "forgetting-quality" / "retain-halves"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, part in (("retain_train", lines[0::2]), ("retain_heldout", lines[1::2])):
        path = folder / f"{name}.jsonl"
        text = "\n".join(part) + "\n"
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
        out[name] = str(path)
    return out


def resolve(task, method: Method, reference=None) -> Method:
    """The row with its placeholders made concrete: :data:`HELDOUT`'s file names, and
    :data:`NEVER_SEEN` as the never-seen model's measurement (``reference``)."""
    halves = retain_halves(task) if set(method.data.values()) & set(HELDOUT.values()) else {}
    data = {k: halves.get(v, v) if isinstance(v, str) else v for k, v in method.data.items()}
    workflow = dict(method.workflow)
    documents = workflow.get("documents")
    if documents is not None and documents.get("reference") == NEVER_SEEN:
        if reference is None:
            raise ValueError(f"{method.name} needs the never-seen model's measurement")
        workflow["documents"] = {**documents, "reference": reference}
    return dataclasses.replace(method, data=data, workflow=workflow)


def heldout(method: Method) -> bool:
    """Does the row measure its retain utility on the held-out retain documents?"""
    return method.data.get("eval_retain") == HELDOUT["eval_retain"]


def scores(measurement) -> dict[str, Any]:
    """Confidences (mean token log-likelihood per forget document) and utilities of one model
    from a workflow measurement; a non-finite log-likelihood (a diverged model) counts as
    :data:`DIVERGED_CONFIDENCE`."""
    from lightning_unlearn.evaluation.targets import document_loglik

    forget = measurement.documents["forget"]
    logliks = document_loglik(forget)  # in the measurement's document order
    if len(logliks) != len(forget["doc_index"]):
        raise ValueError("the forget split's per-document columns repeat a doc_index")
    confidence = [v if math.isfinite(v) else DIVERGED_CONFIDENCE for v in logliks.values()]
    v = measurement.values
    keys = ("forget_ppl", "retain_ppl", "general_ppl", "retain_acc", "general_acc")
    flat = {k: common.finite(v.get(k.replace("_", "/"))) for k in keys}
    return {"doc_index": list(forget["doc_index"]), "confidence": confidence, **flat}


def pretrain(task, *, train: str, seed: int, recipe: dict, scorer, score_data, export=None):
    """Continued pre-training of the base model on ``corpus/<train>.jsonl`` with ``seed`` (data
    order), scored in memory on :data:`SCORE_SPLITS`; with ``export`` the model is saved there."""
    import lightning as L

    from lightning_unlearn.demo import cpu_trainer, demo_data
    from lightning_unlearn.pretraining import ContinuedPretraining

    s = task.settings
    L.seed_everything(seed, verbose=False)
    data = demo_data(
        task.base_dir,
        task.corpus,
        s,
        train=train,
        batch_size=recipe["batch_size"],
        retain=False,
        seed=seed,
        eval_splits=SCORE_SPLITS,
    )
    module = ContinuedPretraining(
        str(task.base_dir), learning_rate=s.pretrain_lr, warmup_ratio=0.0, scheduler="constant"
    )
    clock = step_clock()
    trainer = cpu_trainer(max_epochs=recipe["epochs"], limit_val_batches=0, callbacks=[clock])
    started = time.perf_counter()
    trainer.fit(module, datamodule=data)
    fit_seconds = time.perf_counter() - started
    out = {"seed": seed, "steps": int(trainer.global_step), "train_seconds": clock.seconds}
    out.update(fit_seconds=fit_seconds, seconds=clock.seconds)
    if export is not None:
        module.export(export, overwrite=True)
    else:
        out.update(scores(scorer.measure_checkpoint(module, score_data)))
    del module, trainer, data
    gc.collect()
    return out


def unlearn_once(
    task, method: Method, *, seed: int, seen_dir: Path, before, lr, max_steps, reference=None
):
    """One unlearning run of ``method`` from the seen model with ``seed`` (data order and
    ``seed_everything``), through ``UnlearningWorkflow.run``; the unlearned model is scored in
    memory (the workflow's measurement after) and dropped. ``reference``: the never-seen model's
    measurement, for rows whose targets come from it."""
    from lightning_unlearn.demo import demo_data
    from lightning_unlearn.evaluation.perplexity import Perplexity

    s = task.settings

    def data(retain, **options):  # approximate is not scored: the target is the seen model's
        return demo_data(
            seen_dir,
            task.corpus,
            s,
            train="forget",
            batch_size=common.forget_batch(s, options.pop("batch_size", None)),
            retain=options.pop("retain_documents", None) or bool(retain),
            seed=seed,
            eval_splits=SCORE_SPLITS,
            eval_batch_size=8,
            **options,
        )

    at_target = method.schedule == "target"
    if at_target:
        trainer = dict(
            max_steps=max_steps,
            max_epochs=-1,
            val_check_interval=s.val_every,
            check_val_every_n_epoch=None,
        )
    else:  # one epoch, no checks (validation would come after epoch 2)
        trainer = dict(max_epochs=1, check_val_every_n_epoch=2)
    workflow = dict(
        metrics=[Perplexity()],
        stop_at_target=at_target,
        tolerance=s.target_tolerance,
        checks="fixed",
    )  # every step: the stored models were checked so
    held_out = heldout(method)
    method = resolve(task, method, reference)
    run = unlearn(
        method, seen_dir, data, lr=lr, seed=seed, workflow=workflow, trainer=trainer, before=before
    )
    flow = run.workflow
    # a diverged model is scored as it is: what the method made
    after = flow.measure_checkpoint(run.module, run.data) if run.diverged else flow.after
    checks, stopped = flow.seconds["checks"], run.stopped_step
    out = {
        "seed": seed,
        "steps": run.steps,
        "stopped_step": stopped,
        "reached_target": stopped is not None if at_target else None,
        "diverged": run.diverged,
        "train_seconds": flow.train_seconds,
        "check_seconds": checks,
        # what the unlearning algorithm costs: its steps and, at the target, the checks it needs
        "seconds": flow.train_seconds + checks,
        "fit_seconds": run.seconds - flow.seconds["after"],
        **scores(after),
    }
    if held_out:
        out["retain_split"] = "heldout"
    targets = flow.training.documents
    if targets is not None and targets.targets is not None:
        out["document_targets"] = targets.targets.to_json()
        out["within"] = [c.get("within") for c in flow.checks]
    del run, flow
    gc.collect()
    return out


def seen_model(task, recipe: dict, demo_recipe: dict) -> Path:
    """The one model handed to unlearning: the demo's seen model, or with another recipe this
    script's own (seed 0, cached under the demo cache by its settings)."""
    from lightning_unlearn.demo import settings_key

    if recipe == demo_recipe:
        return Path(task.seen_dir)
    s = task.settings
    manifest = (task.corpus / "manifest.json").read_text()
    key = settings_key(
        str(task.base_dir), manifest, "pretrain", s.max_length, recipe, s.pretrain_lr, 0
    )
    out = Path(s.cache_dir) / "forgetting-quality"
    out /= f"seen-b{recipe['batch_size']}-e{recipe['epochs']}"
    stamp = out / "lightning_unlearn_settings.sha"
    if not (stamp.is_file() and stamp.read_text() == key):
        print(f"training the seen model with {recipe} (seed 0) into {out}", flush=True)
        pretrain(
            task, train="pretrain", seed=0, recipe=recipe, scorer=None, score_data=None, export=out
        )
        stamp.write_text(key)
    return out
