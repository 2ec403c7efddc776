"""What the distributed test workers (``_scale_worker.py``, ``_backward_worker.py``) share: the
command line, the fixed data and its shards, and the process group's teardown.

The data are fixed random token ids with no padding, so every row has the same number of target
tokens: the mean loss of each rank's half-batch, averaged over ranks, is then exactly the token
mean over the full batch that the single-process run sees, and so are the gradients.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

ROWS, WIDTH = 4, 16


class _Repeat(torch.utils.data.IterableDataset):
    def __init__(self, batch, n):
        self.batch, self.n = batch, n

    def __iter__(self):
        for _ in range(self.n):
            yield self.batch

    def __len__(self):
        return self.n


def full_batches(vocab_size: int) -> dict[str, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1234)
    out = {}
    for part in ("forget", "retain"):
        ids = torch.randint(1, vocab_size, (ROWS, WIDTH), generator=gen)
        out[part] = {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "labels": ids.clone(),
        }
    return out


def shard(batches, rank: int, world: int):
    per = ROWS // world
    return {
        part: {k: v[rank * per : (rank + 1) * per] for k, v in batch.items()}
        for part, batch in batches.items()
    }


def rank_setup(model: str, out: str | os.PathLike) -> tuple[Path, int, int, dict]:
    """``(out, rank, world, batches)``: the output folder (created), this process's rank and the
    world size (from torchrun's environment; 0 and 1 without it), and this rank's shard of the
    fixed batches for ``model``'s vocabulary."""
    from transformers import AutoConfig

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    batches = shard(full_batches(AutoConfig.from_pretrained(model).vocab_size), rank, world)
    return out, rank, world, batches


def worker_parser() -> argparse.ArgumentParser:
    """A worker's command line: ``--mode single|ddp|zero3 --model M --out O``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", required=True, choices=["single", "ddp", "zero3"])
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    return parser


def finish_process_group() -> None:
    """Tear the process group down before the interpreter exits: one CI run (1 in about 8 of
    these launches) aborted at exit with "terminate called without an active exception" after
    every fit had finished, a gloo thread still joinable while the group was destroyed from the
    interpreter's exit handlers."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
