"""The demo task: its settings, its data module, its quiet CPU trainer (``testing.cpu_trainer``,
the tests' too) and the continued pre-training that makes the forget set *seen* (and, without the
forget set, the exact-retrain model). The benchmarks build the same task from these, so they share
the demo's cache."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..testing import cpu_trainer

__all__ = [
    "DemoSettings",
    "StepProgress",
    "continue_pretraining",
    "cpu_trainer",
    "demo_data",
    "quiet",
    "settings_key",
]


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


def settings_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def quiet() -> None:
    """Silence the libraries' logs, warnings and progress bars (the demo prints its own)."""
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


class StepProgress:
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
                if trainer.state.fn != "fit":
                    return  # the measurements before and after are not checks
                ppl = trainer.callback_metrics.get("val/forget/ppl")
                if ppl is not None:
                    text = f"forget ppl {float(ppl):.2f}"
                    if target is not None:
                        text += f" (target {target:.2f})"
                    progress.update(task, status=text)
                    if plain:
                        progress.console.print(f"    step {trainer.global_step}: {text}")

        return StepProgress()


def demo_data(
    model_dir: Path,
    corpus: Path,
    s: DemoSettings,
    *,
    train: str,
    batch_size: int,
    retain: bool | str | Path,
    **overrides: Any,
):
    """The demo's data module: ``corpus/<train>.jsonl`` to train on (with the retain split when
    ``retain``, or with the retain documents of that file), and every evaluation split of the
    corpus; ``overrides`` replace its options."""
    from ..data import UnlearningDataModule

    options = {
        "forget": str(corpus / f"{train}.jsonl"),
        "retain": None
        if not retain
        else str(corpus / "retain.jsonl" if retain is True else retain),
        "eval_forget": str(corpus / "forget.jsonl"),
        "eval_retain": str(corpus / "retain.jsonl"),
        "approximate": str(corpus / "approximate.jsonl"),
        "general": str(corpus / "general.jsonl"),
        "max_length": s.max_length,
        "batch_size": batch_size,
        "eval_batch_size": 16,
        "cache_dir": str(Path(s.cache_dir) / "data"),
        "seed": s.seed,
    }
    return UnlearningDataModule(str(model_dir), **{**options, **overrides})


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

    from ..pretraining import ContinuedPretraining

    key = settings_key(
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
    data = demo_data(
        model_dir, corpus, s, train=train, batch_size=s.pretrain_batch_size, retain=False
    )
    module = ContinuedPretraining(
        str(model_dir), learning_rate=s.pretrain_lr, warmup_ratio=0.0, scheduler="constant"
    )
    callbacks = [StepProgress(progress, task)] if progress is not None else []
    trainer = cpu_trainer(max_epochs=s.pretrain_epochs, limit_val_batches=0, callbacks=callbacks)
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
