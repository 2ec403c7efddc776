"""One optimizer step of GA+GD, GA+KL and NPO (KL retain term) in both backward orders, on one
process or as one rank of a distributed job (used by test_backward.py); the gradients are saved.

    torchrun --nproc-per-node 2 tests/_backward_worker.py --mode ddp --model M --out O
    torchrun --nproc-per-node 2 tests/_backward_worker.py --mode zero3 --model M --out O

The data are ``_scale_worker``'s: fixed random token ids without padding, so every rank's
half-batch has the same number of target tokens and the ranks' mean gradient is the full batch's.
"""

from __future__ import annotations

import os
import sys

import _scale_worker as scale
import lightning as Lightning
import torch
from _workers_common import rank_setup, worker_parser

#: (name, class, options): the three methods whose two terms both back-propagate
METHODS = (
    ("ga_gd", "GradientAscentDescent", {}),
    ("ga_kl", "GradientAscentKL", {}),
    ("npo_kl", "NegativePreferenceOptimization", {"retain_term": "kl"}),
)
ORDERS = ("joint", "sequential")
#: a Trainer that writes and prints nothing
QUIET = dict(
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    num_sanity_val_steps=0,
)


def gradients(module, zero3: bool) -> dict[str, torch.Tensor]:
    """Every trainable parameter's full gradient (gathered from the ZeRO-3 partitions)."""
    out = {}
    for name, param in module.model.named_parameters():
        if not param.requires_grad:
            continue
        if zero3:
            from deepspeed.utils import safe_get_full_grad

            grad = safe_get_full_grad(param)
        else:
            grad = param.grad
        out[name] = grad.detach().float().clone().cpu()
    return out


class Grab(Lightning.Callback):
    """Keeps the gradients the optimizer is about to step with, and the backward order used."""

    def __init__(self, *, zero3: bool) -> None:
        self.zero3, self.gradients, self.mode = zero3, {}, None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.gradients = gradients(pl_module, self.zero3)
        self.mode = pl_module.backward_mode()


def run(mode: str, model: str, out: str | os.PathLike) -> None:
    import lightning as Lg

    import lightning_unlearn
    from lightning_unlearn.strategies import CPUDeepSpeedStrategy

    out, rank, world, batches = rank_setup(model, out)
    for name, cls_name, options in METHODS:
        for order in ORDERS:
            kwargs: dict = dict(accelerator="cpu", devices=1)
            if mode == "zero3":
                kwargs.update(
                    devices=world,
                    precision="32-true",
                    strategy=CPUDeepSpeedStrategy(
                        stage=3, logging_batch_size_per_gpu=scale.ROWS // world
                    ),
                )
            elif mode == "ddp":
                kwargs.update(devices=world, strategy="ddp")
            torch.manual_seed(0)
            cls = getattr(lightning_unlearn, cls_name)
            constant = dict(learning_rate=scale.LR, warmup_ratio=0.0, scheduler="constant")
            module = cls(model, backward=order, **constant, **options)
            grab = Grab(zero3=mode == "zero3")
            trainer = Lg.Trainer(max_steps=1, callbacks=[grab], **QUIET, **kwargs)
            data = torch.utils.data.DataLoader(scale._Repeat(batches, 1), batch_size=None)
            trainer.fit(module, data)
            assert grab.mode == order
            if rank == 0:
                torch.save(grab.gradients, out / f"{name}-{order}.pt")


def main(argv: list[str] | None = None) -> int:
    args = worker_parser().parse_args(argv)
    torch.set_num_threads(1)
    run(args.mode, args.model, args.out)
    scale.finish_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
