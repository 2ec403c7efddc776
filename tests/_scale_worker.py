"""One GA+KL run on CPU, single-process or as one rank of a distributed job (used by test_scale*.py).

Run by the tests in-process (``run(mode="single")``) or under torchrun::

    torchrun --nproc-per-node 2 tests/_scale_worker.py --mode zero3 --model M --out O
    torchrun --nnodes 2 --nproc-per-node 1 --node-rank R --master-addr 127.0.0.1 \
        --master-port P tests/_scale_worker.py --mode ddp --model M --out O

The data are ``_workers_common``'s: fixed random token ids with no padding, so every row has the
same number of target tokens and the ranks' mean loss and gradients are the full batch's.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from _workers_common import (  # noqa: F401 (full_batches, shard: read as scale.* by others)
    ROWS,
    _Repeat,
    finish_process_group,
    full_batches,
    rank_setup,
    shard,
    worker_parser,
)

STEPS, LR = 3, 1e-2


def run(mode: str, model: str, out: str | os.PathLike) -> dict:
    import lightning as Lg
    from safetensors.torch import save_file

    from lightning_unlearn import GradientAscentKL
    from lightning_unlearn.strategies import CPUDeepSpeedStrategy, local_shard_sizes

    out, rank, world, batches = rank_setup(model, out)
    kwargs: dict = dict(accelerator="cpu", devices=1, num_nodes=1)
    if mode == "zero3":
        kwargs.update(
            devices=world,
            strategy=CPUDeepSpeedStrategy(stage=3, logging_batch_size_per_gpu=ROWS // world),
            precision="32-true",
        )
    elif mode == "ddp":
        kwargs.update(num_nodes=world, strategy="ddp")
    elif mode != "single":
        raise ValueError(f"unknown mode {mode!r}")
    torch.manual_seed(0)
    module = GradientAscentKL(model, learning_rate=LR, warmup_ratio=0.0, scheduler="constant")
    losses: list[float] = []

    class Record(Lg.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer = Lg.Trainer(
        max_steps=STEPS,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[Record()],
        **kwargs,
    )
    data = torch.utils.data.DataLoader(_Repeat(batches, STEPS), batch_size=None)
    trainer.fit(module, data)
    report = {"rank": rank, "world": world, "losses": losses}
    if mode == "zero3":
        report["model_shards"] = local_shard_sizes(module.model)
        report["reference_shards"] = local_shard_sizes(module.reference)
        module.export(out / "exported")
    elif trainer.global_rank == 0:
        state = {k: v.detach().clone().contiguous() for k, v in module.model.state_dict().items()}
        save_file(state, str(out / "weights.safetensors"))
    (out / f"report-{rank}.json").write_text(json.dumps(report))
    return report


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(*launcher_args: str, mode: str, model, out, runs: int = 1) -> subprocess.Popen:
    """Start ``python -m torch.distributed.run <launcher_args> _scale_worker.py ...``."""
    command = [sys.executable, "-m", "torch.distributed.run", *launcher_args, __file__]
    command += ["--mode", mode, "--model", str(model), "--out", str(out), "--runs", str(runs)]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(procs: list[subprocess.Popen], timeout: float = 240) -> None:
    """Wait for every launcher; on failure raise with the tail of its output."""
    for proc in procs:
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            raise
        if proc.returncode != 0:
            raise AssertionError(f"{' '.join(proc.args)} failed:\n{output[-4000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = worker_parser()
    parser.add_argument(
        "--runs", type=int, default=1, help="fits in one process, each into OUT/run-<i> when > 1"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for i in range(args.runs):
        run(args.mode, args.model, Path(args.out) / f"run-{i}" if args.runs > 1 else args.out)
    finish_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
