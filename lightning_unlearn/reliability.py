"""Reliability: resumable runs, checkpoints that are never poisoned, and input checks.

What lives here (see ``docs/reliability.md`` for the guarantees and how each one is tested):

* :class:`StepSeeding` -- the random state of every training batch is derived from
  ``(seed, rank, batch index)``, and the seed travels in the checkpoint, so a run resumed from a
  checkpoint draws the same random numbers as an uninterrupted one (dropout, random targets).
  Together with the data module's resumable samplers (forget order and retain stream restart at
  the checkpoint's batch) a killed and resumed run ends with the same weights.
* :class:`FiniteModelCheckpoint` -- Lightning's ``ModelCheckpoint`` that refuses to write
  weights holding NaN/inf, so the last checkpoint on disk is always a good one.
* :class:`FaultInjection` -- scripted faults for tests: an exception, a NaN loss, a NaN
  gradient, or a hang (to be killed from outside) at a chosen step.
* Input checks that name the bad input and the fix: :func:`check_batch_budget`,
  :func:`check_strategy`, :func:`check_model_inputs`, :func:`check_reference_config`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from .methods.base import DivergenceError

log = logging.getLogger(__name__)

__all__ = [
    "StepSeeding",
    "FiniteModelCheckpoint",
    "FaultInjection",
    "DEFAULT_MAX_BATCH_TOKENS",
    "check_batch_budget",
    "check_strategy",
    "check_model_inputs",
    "check_reference_config",
    "trainer_presets",
    "staged_outputs",
]

#: default token budget of one training step (forget + retain windows held at once)
DEFAULT_MAX_BATCH_TOKENS = 262_144


# ----------------------------------------------------------------------------------- callbacks
class StepSeeding(Callback):
    """Seed Python, NumPy and torch (CPU and CUDA) before every training batch.

    The seed of batch ``i`` (counted over the whole run) on rank ``r`` is a fixed function of
    ``(seed, r, i)``. The base ``seed`` is saved in checkpoints and restored on resume, so the
    random numbers drawn after a resume are those an uninterrupted run draws, whatever happened
    between the checkpoint and the crash (validation, read-ahead of data loader iterators).

    Args:
        seed: base seed; ``None`` takes the one ``seed_everything`` set (``PL_GLOBAL_SEED``), else
            torch's initial seed.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.seed is None:
            env = os.environ.get("PL_GLOBAL_SEED")
            self.seed = int(env) if env is not None else int(torch.initial_seed() % 2**31)

    def batch_seed(self, rank: int, batch_index: int) -> int:
        return (int(self.seed or 0) * 1_000_003 + rank * 10_007 + batch_index) % 2**32

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        seed = self.batch_seed(int(trainer.global_rank), int(trainer.fit_loop.total_batch_idx))
        random.seed(seed)
        torch.manual_seed(seed)  # seeds every CUDA device too
        try:
            import numpy as np

            np.random.seed(seed)
        except ImportError:  # pragma: no cover - numpy ships with torch
            pass

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("seed") is not None:
            if self.seed is not None and self.seed != state_dict["seed"]:
                log.info(
                    "resuming with the checkpoint's seed %s (not %s)", state_dict["seed"], self.seed
                )
            self.seed = int(state_dict["seed"])


class FiniteModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that never writes non-finite weights.

    Training already stops on a non-finite loss or gradient before any checkpoint of that step is
    written; this covers the remaining case (an optimizer step that overflows the weights with
    finite gradients): the save is refused with :class:`DivergenceError`, so ``last.ckpt`` stays
    the last good state. Every argument is that of ``ModelCheckpoint``.
    """

    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        module = trainer.lightning_module
        for name, p in module.named_parameters():
            if p.numel() and not torch.isfinite(p.detach()).all():
                last = self.last_model_path or self.best_model_path or "none yet"
                raise DivergenceError(
                    f"weight '{name}' is not finite at step {trainer.global_step}; not writing "
                    f"checkpoint '{filepath}'. The last good checkpoint is '{last}': resume from it "
                    "with a lower learning_rate"
                )
        super()._save_checkpoint(trainer, filepath)


class FaultInjection(Callback):
    """Inject a fault at one training step (for reliability tests).

    Args:
        at_step: the global step (optimizer steps done) at whose batch the fault happens.
        kind: ``"exception"`` raises ``RuntimeError``; ``"nan_loss"`` turns the trained weights to
            NaN before the forward pass, so the loss is NaN; ``"nan_grad"`` puts a NaN into one
            gradient after the backward pass; ``"hang"`` writes ``marker`` and sleeps, for a test
            to kill the process from outside.
        marker: file written when the fault fires (default: none).
    """

    def __init__(
        self,
        at_step: int,
        kind: Literal["exception", "nan_loss", "nan_grad", "hang"] = "exception",
        marker: str | None = None,
    ) -> None:
        if kind not in ("exception", "nan_loss", "nan_grad", "hang"):
            raise ValueError(f"unknown fault kind {kind!r}")
        self.at_step = int(at_step)
        self.kind = kind
        self.marker = marker

    def _fire(self) -> None:
        if self.marker:
            Path(self.marker).write_text(self.kind)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step != self.at_step:
            return
        if self.kind == "exception":
            self._fire()
            raise RuntimeError(f"injected fault at step {self.at_step}")
        if self.kind == "nan_loss":
            self._fire()
            with torch.no_grad():
                for p in pl_module.parameters():
                    if p.requires_grad:
                        p.fill_(float("nan"))
        if self.kind == "hang":
            self._fire()
            while True:  # wait to be killed
                time.sleep(1.0)

    def on_after_backward(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.kind == "nan_grad" and trainer.global_step == self.at_step:
            self._fire()
            for p in pl_module.parameters():
                if p.grad is not None:
                    p.grad.view(-1)[0] = float("nan")
                    break


# ----------------------------------------------------------------------------------- checks
def check_batch_budget(
    *,
    batch_size: int,
    max_length: int,
    retain_per_forget: int = 1,
    with_retain: bool = True,
    max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS,
) -> int:
    """Refuse a training step that would hold more than ``max_batch_tokens`` tokens.

    One step keeps the forget batch's and (methods with a retain term) the retain batch's graphs
    alive until the backward pass: ``batch_size * max_length * (1 + retain_per_forget)`` tokens.
    Returns that number. ``max_batch_tokens=None`` disables the check.
    """
    factor = 1 + (retain_per_forget if with_retain else 0)
    tokens = batch_size * max_length * factor
    if max_batch_tokens is not None and tokens > max_batch_tokens:
        shape = f"batch_size {batch_size} x max_length {max_length}"
        if factor > 1:
            shape += f" x (1 forget + {retain_per_forget} retain)"
        raise ValueError(
            f"one training step would hold {shape} = {tokens:,} tokens, above the allowed "
            f"max_batch_tokens={max_batch_tokens:,}. Lower data.batch_size (and set "
            "trainer.accumulate_grad_batches to keep the effective batch) or max_length, or "
            "raise --max_batch_tokens if your hardware holds it"
        )
    return tokens


def trainer_presets() -> list[str]:
    """Names of the trainer presets shipped under ``configs/trainer/``."""
    folder = Path(__file__).resolve().parent.parent / "configs" / "trainer"
    return sorted(p.stem for p in folder.glob("*.yaml"))


def check_strategy(strategy: Any) -> None:
    """Refuse a strategy name Lightning does not know, listing the presets and the known names."""
    if not isinstance(strategy, str) or strategy == "auto":
        return
    from lightning.pytorch.strategies import StrategyRegistry

    known = StrategyRegistry.available_strategies()
    if strategy in known:
        return
    presets = trainer_presets()
    hint = ""
    if strategy in presets:
        hint = f" '{strategy}' is a preset: pass --config configs/trainer/{strategy}.yaml."
    raise ValueError(
        f"unknown strategy '{strategy}' (trainer.strategy).{hint} Trainer presets (use "
        f"--config configs/trainer/<name>.yaml): {', '.join(presets)}. Strategy names Lightning "
        f"knows: {', '.join(sorted(known))}"
    )


def _config_value(config: Any, *names: str) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    text = getattr(config, "text_config", None)
    if text is not None and text is not config:
        return _config_value(text, *names)
    return None


def check_model_inputs(
    config: Any,
    *,
    model: str,
    tokenizer: Any = None,
    tokenizer_name: str | None = None,
    max_length: int | None = None,
) -> None:
    """Check that the tokenizer and ``max_length`` fit the model described by ``config``.

    Raises ``ValueError`` when the tokenizer has more tokens than the model's embedding has rows
    (its ids would index past the embedding) or when ``max_length`` exceeds the model's context
    (``max_position_embeddings``).
    """
    vocab = _config_value(config, "vocab_size")
    if tokenizer is not None and vocab is not None:
        n_tok = len(tokenizer)
        if n_tok > int(vocab):
            raise ValueError(
                f"tokenizer '{tokenizer_name or getattr(tokenizer, 'name_or_path', '?')}' has "
                f"{n_tok} tokens but model '{model}' has a vocabulary of {vocab}: they do not "
                "belong together. Use the model's own tokenizer (data.tokenizer = the model path)"
            )
    context = _config_value(config, "max_position_embeddings", "n_positions", "max_sequence_length")
    if max_length is not None and context is not None and max_length > int(context):
        raise ValueError(
            f"max_length {max_length} is above the context of model '{model}' "
            f"(max_position_embeddings={context}); set data.max_length <= {context}"
        )


def check_reference_config(config: Any, reference: Any, *, model: str, reference_name: str) -> None:
    """Refuse a reference model whose architecture differs from the trained model's.

    Compares ``model_type``, ``vocab_size`` and ``hidden_size``: KL, NPO and adversarial targets
    compare the two models' distributions token by token, which needs the same vocabulary.
    """
    fields = ("model_type", "vocab_size", "hidden_size")
    mine = {f: _config_value(config, f) for f in fields}
    theirs = {f: _config_value(reference, f) for f in fields}
    diff = [f"{f}: {mine[f]!r} vs {theirs[f]!r}" for f in fields if mine[f] != theirs[f]]
    if diff:
        raise ValueError(
            f"reference model '{reference_name}' is not the same architecture as model "
            f"'{model}' ({'; '.join(diff)}). Give a reference of the same family and size "
            "(reference_model_name_or_path), or leave it unset to use a frozen copy of the model"
        )


def load_config(
    name_or_path: str, *, gguf_file: str | None = None, trust_remote_code: bool = False
):
    """The transformers config of a model reference, without loading its weights."""
    from transformers import AutoConfig

    from .models import resolve_model_source

    source, gguf = resolve_model_source(name_or_path, gguf_file)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if gguf is not None:
        kwargs["gguf_file"] = gguf
    try:
        return AutoConfig.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        raise OSError(f"could not read the config of model '{name_or_path}': {err}") from err


# ----------------------------------------------------------------------------------- outputs
@contextlib.contextmanager
def staged_outputs(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden staging folder inside ``out_dir``; move what it holds into place at the end.

    Everything a run publishes (the exported model, the report files) is written into the
    staging folder first. Only when the block finishes is each entry renamed over its
    counterpart in ``out_dir`` (a folder is swapped with two renames). An exception inside the
    block -- a crash half way through the export -- removes the staging folder and leaves every
    previous output untouched.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    try:
        yield staging
        for entry in sorted(staging.iterdir()):
            final = out / entry.name
            if final.is_dir() and not final.is_symlink():
                old = Path(tempfile.mkdtemp(prefix=f".{entry.name}.old-", dir=out))
                old.rmdir()
                os.replace(final, old)
                os.replace(entry, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(entry, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
