"""``backward="sequential"`` (the forget term back-propagated before the retain term is computed)
gives the gradients of one joint backward: on one process, on two DDP processes and under
DeepSpeed ZeRO-3 on two CPU processes; and gradient accumulation still works."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import _backward_worker as worker
import _scale_worker as scale
import lightning as Lg
import pytest
import torch

from lightning_unlearn import GradientAscentDescent
from lightning_unlearn.testing import build_method

HERE = Path(__file__).resolve().parent


def assert_same_gradients(joint: dict, sequential: dict, *, bound: float = 1e-6) -> None:
    """||g_seq - g_joint|| / ||g_joint|| <= bound for every tensor."""
    assert joint and set(joint) == set(sequential)
    for name, g in joint.items():
        rel = float((sequential[name] - g).norm() / g.norm().clamp_min(1e-30))
        assert rel <= bound, (name, rel)


@pytest.fixture(scope="module")
def single(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("backward-single")
    worker.run("single", str(tiny_model_dir), out)
    return {p.stem: torch.load(p) for p in out.glob("*.pt")}


def test_sequential_equals_joint_on_one_process(single):
    for name, _, _ in worker.METHODS:
        assert_same_gradients(single[f"{name}-joint"], single[f"{name}-sequential"])
        assert max(g.abs().max() for g in single[f"{name}-joint"].values()) > 1e-4  # not zero


def test_sequential_is_the_default_and_frees_the_forget_graph_first(tiny_model_dir):
    module = build_method(GradientAscentDescent, tiny_model_dir)
    assert module.backward_mode() == "sequential"
    assert (
        build_method(GradientAscentDescent, tiny_model_dir, backward="joint").backward_mode()
        == "joint"
    )
    with pytest.raises(ValueError, match="backward must be 'joint', 'sequential' or None"):
        GradientAscentDescent(str(tiny_model_dir), backward="both")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "zero3"])
def test_sequential_equals_joint_on_two_processes(mode, single, tiny_model_dir, tmp_path):
    """One launch per backend covers the three methods in both orders; the two-process gradients
    also equal the one-process ones (each rank holds half the batch)."""
    launch = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    options = ["--mode", mode, "--model", str(tiny_model_dir), "--out", str(tmp_path)]
    command = [sys.executable, *launch, str(HERE / "_backward_worker.py"), *options]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name, _, _ in worker.METHODS:
        joint = torch.load(tmp_path / f"{name}-joint.pt")
        sequential = torch.load(tmp_path / f"{name}-sequential.pt")
        assert_same_gradients(joint, sequential)
        assert_same_gradients(single[f"{name}-joint"], joint, bound=1e-4)


def _gradients_of_one_step(module, loader, accumulate: int) -> dict[str, torch.Tensor]:
    """The gradient the optimizer steps with (after ``accumulate`` batches)."""
    grabbed: dict = {}

    class Grab(Lg.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            named = pl_module.model.named_parameters()
            grabbed.update({n: p.grad.detach().clone() for n, p in named if p.grad is not None})

    options = dict(accelerator="cpu", accumulate_grad_batches=accumulate, callbacks=[Grab()])
    trainer = Lg.Trainer(max_steps=1, **options, **worker.QUIET)
    trainer.fit(module, loader)
    return grabbed


@pytest.mark.parametrize("order", ["joint", "sequential"])
def test_accumulating_two_half_batches_is_one_batch_twice_as_large(order, tiny_model_dir):
    """Two half-batches accumulated give the gradient (hence the update) of the full batch: each
    half has the same number of target tokens, so the mean of their mean losses is the full one."""
    from transformers import AutoConfig

    full = scale.full_batches(AutoConfig.from_pretrained(tiny_model_dir).vocab_size)
    halves = [scale.shard(full, r, 2) for r in range(2)]

    def build():
        torch.manual_seed(0)
        return build_method(GradientAscentDescent, tiny_model_dir, backward=order)

    def loader(items):
        return torch.utils.data.DataLoader(scale._Repeat(items, 1), batch_size=None)

    one = _gradients_of_one_step(build(), loader(full), 1)

    class Halves(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield from halves

        def __len__(self):
            return 2

    two = _gradients_of_one_step(build(), torch.utils.data.DataLoader(Halves(), batch_size=None), 2)
    assert one and set(one) == set(two)
    assert max(g.abs().max() for g in one.values()) > 1e-4
    for name in one:
        torch.testing.assert_close(two[name], one[name], atol=1e-7, rtol=1e-5, msg=name)
