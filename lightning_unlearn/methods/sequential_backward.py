"""Back-propagating the forget term before the retain term is computed (``backward="sequential"``).

A step with a retain term holds two sequences' activations when it back-propagates the sum of
both terms once (``"joint"``). Back-propagating the forget term as soon as it is computed frees
its graph first, so one sequence's activations are alive at a time; the gradients add up to the
joint ones. The step's second backward is Lightning's own, of the loss the step returns.

Doing a backward inside ``training_step`` means doing what Lightning does around its own: the
accumulation's division, the strategy and precision plugin (loss scaling, hooks, the DeepSpeed
engine), and the zeroing of gradients, which Lightning does after the step returns. This module
owns those mechanics; :class:`~lightning_unlearn.methods.base.UnlearningModule` calls it.
"""

from __future__ import annotations

from typing import Any, Literal

from lightning.pytorch import LightningModule
from torch import Tensor

BackwardOrder = Literal["joint", "sequential"]


class SequentialBackward:
    """The backward order of a module's steps and the early forget backward.

    Args:
        order: ``"sequential"``, ``"joint"``, or ``None``: sequential except under DeepSpeed (the
            engine reduces at every backward: twice per step) and FSDP (its hooks expect one
            backward per forward), where it is joint (``docs/cluster.md``).
    """

    def __init__(self, order: BackwardOrder | None) -> None:
        if order not in (None, "joint", "sequential"):
            raise ValueError(f"backward must be 'joint', 'sequential' or None, got {order!r}")
        self.order = order
        self._zeroed_early: tuple[int, int] | None = None

    def mode(self, trainer: Any) -> BackwardOrder:
        """``"joint"`` or ``"sequential"`` under ``trainer`` (``None`` outside one)."""
        if self.order is not None:
            return self.order
        strategy = type(getattr(trainer, "strategy", None)).__name__
        return "joint" if ("DeepSpeed" in strategy or "FSDP" in strategy) else "sequential"

    def backward_now(self, module: LightningModule, loss: Tensor, batch_idx: int) -> Tensor:
        """Back-propagate ``loss`` inside ``module.training_step`` exactly as Lightning
        back-propagates the step's returned loss (divided by the accumulation, through the
        strategy and the precision plugin: loss scaling, backward hooks, the DeepSpeed engine).

        Under DDP the step runs inside the wrapper's forward, before the reducer is prepared for
        this step's backward, so this backward accumulates locally (like ``no_sync``) and the
        step's second backward reduces the sum once. Under DeepSpeed ZeRO the optimizer is told a
        new micro-batch began (what the engine's next forward would do), so the second backward
        adds to the gradient partitions instead of replacing them.

        Lightning zeroes the gradients after ``training_step`` returns, before its backward: on
        the first batch of an accumulation cycle they are zeroed here instead, before this
        backward, and :meth:`skip_zero_grad` tells the module to skip that step's second zeroing.

        Returns ``loss`` detached: the step adds the retain term to it without a graph.
        """
        trainer = module.trainer
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        if batch_idx % trainer.accumulate_grad_batches == 0 and optimizer is not None:
            module.optimizer_zero_grad(trainer.current_epoch, batch_idx, optimizer)
            self._zeroed_early = (trainer.current_epoch, batch_idx)
        trainer.strategy.backward(loss / trainer.accumulate_grad_batches, optimizer)
        zero = getattr(getattr(trainer.strategy, "model", None), "optimizer", None)
        if "DeepSpeed" in type(trainer.strategy).__name__ and hasattr(
            zero, "clear_backward_seen_flag"
        ):
            zero.clear_backward_seen_flag()
        return loss.detach()

    def skip_zero_grad(self, epoch: int, batch_idx: int) -> bool:
        """Whether Lightning's zeroing of this step's gradients must be skipped: they were zeroed
        before the early forget backward, and what they hold now is the step's."""
        if self._zeroed_early == (epoch, batch_idx):
            self._zeroed_early = None
            return True
        return False
