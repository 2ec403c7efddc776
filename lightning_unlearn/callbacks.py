"""Callbacks every ``fit`` of the CLI runs with: reproducible random numbers across a resume, and
checkpoints that never hold non-finite weights (``docs/reliability.md``).

* :class:`StepSeeding` -- the random state of every training batch is derived from
  ``(seed, rank, batch index)``, and the seed travels in the checkpoint, so a run resumed from a
  checkpoint draws the same random numbers as an uninterrupted one (dropout, random targets).
  Together with the data module's resumable samplers (forget order and retain stream restart at
  the checkpoint's batch) a killed and resumed run ends with the same weights.
* :class:`FiniteModelCheckpoint` -- Lightning's ``ModelCheckpoint`` that refuses to write
  weights holding NaN/inf, so the last checkpoint on disk is always a good one.
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from .methods.base import DivergenceError

log = logging.getLogger(__name__)

__all__ = ["StepSeeding", "FiniteModelCheckpoint"]


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
