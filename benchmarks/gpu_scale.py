"""Throughput and memory of GA+GD and GA+KL under DeepSpeed ZeRO-3 (+ optimizer offload).

On a GPU machine (no download: the model is a random-initialised 7B-config Llama built from its
config and saved once to a local folder)::

    torchrun --nproc-per-node 8 benchmarks/gpu_scale.py --model llama-7b --steps 10
    torchrun --nproc-per-node 1 benchmarks/gpu_scale.py --model llama-7b --offload   # one GPU

It prints, per method and strategy: tokens/s (all GPUs), peak GPU memory per GPU, and model-FLOPs
utilisation (MFU = 6 N tokens/s, plus 2 N for the reference forward of GA+KL, over the GPUs' peak
bf16 FLOP/s, ``--peak-tflops``, default 989 for an H100 SXM dense bf16). The first
``--warmup`` steps are not timed. Record the figures in docs/performance.md with the date and GPU.

Smoke test on CPU (tiny model, DeepSpeed's CPU accelerator)::

    torchrun --nproc-per-node 2 benchmarks/gpu_scale.py --model tiny --cpu --steps 2 --seq-len 32
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch


def build_checkpoint(model: str, folder: Path) -> Path:
    """Save a random-initialised model of the named config once (rank 0) and return its folder."""
    from transformers import AutoModelForCausalLM

    from lightning_unlearn.planner import load_model_config
    from lightning_unlearn.testing import tiny_llama_config

    out = folder / model
    if (out / "config.json").exists():
        return out
    config = tiny_llama_config(512) if model == "tiny" else load_model_config(model)
    dtype = torch.float32 if model == "tiny" else torch.bfloat16
    net = AutoModelForCausalLM.from_config(config, dtype=dtype)
    tmp = folder / f".{model}.tmp-{os.getpid()}"
    net.save_pretrained(tmp, safe_serialization=True)
    os.replace(tmp, out)
    return out


class _RandomTokens(torch.utils.data.IterableDataset):
    def __init__(self, vocab: int, batch: int, seq_len: int, steps: int, seed: int):
        self.vocab, self.batch, self.seq_len, self.steps, self.seed = (
            vocab,
            batch,
            seq_len,
            steps,
            seed,
        )

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed)
        for _ in range(self.steps):
            parts = {}
            for part in ("forget", "retain"):
                ids = torch.randint(1, self.vocab, (self.batch, self.seq_len), generator=gen)
                parts[part] = {
                    "input_ids": ids,
                    "attention_mask": torch.ones_like(ids),
                    "labels": ids,
                }
            yield parts

    def __len__(self):
        return self.steps


def run_one(method: str, checkpoint: Path, args, backward: str = "joint") -> dict:
    import lightning as Lg
    from transformers import AutoConfig

    from lightning_unlearn import GradientAscentDescent, GradientAscentKL
    from lightning_unlearn.planner import model_size
    from lightning_unlearn.strategies import CPUDeepSpeedStrategy, HFDeepSpeedStrategy

    cls = {"ga_gd": GradientAscentDescent, "ga_kl": GradientAscentKL}[method]
    module = cls(
        str(checkpoint),
        learning_rate=1e-5,
        warmup_ratio=0.0,
        scheduler="constant",
        gradient_checkpointing=args.gradient_checkpointing,
        backward=backward,
    )
    world = int(os.environ.get("WORLD_SIZE", 1))
    strategy_cls = CPUDeepSpeedStrategy if args.cpu else HFDeepSpeedStrategy
    strategy = strategy_cls(
        stage=3, offload_optimizer=args.offload, logging_batch_size_per_gpu=args.micro_batch
    )
    times: list[float] = []

    class Clock(Lg.Callback):
        def on_train_batch_start(self, *a):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.t = time.perf_counter()

        def on_train_batch_end(self, *a):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t)

    steps = args.warmup + args.steps
    trainer = Lg.Trainer(
        accelerator="cpu" if args.cpu else "gpu",
        devices=world,
        strategy=strategy,
        precision="32-true" if args.cpu else "bf16-mixed",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Clock()],
    )
    vocab = AutoConfig.from_pretrained(checkpoint).vocab_size
    rank = trainer.global_rank
    data = _RandomTokens(vocab, args.micro_batch, args.seq_len, steps, seed=rank)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=None))
    timed = times[args.warmup :]
    # forget + retain sequences per step, on every rank
    tokens = 2 * args.micro_batch * args.seq_len * world * len(timed)
    tokens_per_s = tokens / sum(timed)
    n = model_size(AutoConfig.from_pretrained(checkpoint)).total
    flops_per_token = 6 * n + (
        2 * n / 2 if method == "ga_kl" else 0
    )  # reference forward on retain half
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    mfu = tokens_per_s * flops_per_token / (args.peak_tflops * 1e12 * world)
    return {
        "method": method,
        "backward": backward,
        "strategy": "zero3" + ("+offload" if args.offload else ""),
        "gpus": world,
        "tokens_per_s": round(tokens_per_s, 1),
        "peak_gpu_gib": round(peak / 1024**3, 2),
        "mfu": round(mfu, 4),
        "params": n,
        "seq_len": args.seq_len,
        "micro_batch": args.micro_batch,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model", default="llama-7b", help="a planner model name (llama-7b...) or 'tiny'"
    )
    parser.add_argument(
        "--methods", nargs="+", default=["ga_gd", "ga_kl"], choices=["ga_gd", "ga_kl"]
    )
    parser.add_argument(
        "--offload", action="store_true", help="ZeRO-3 with optimizer offload to CPU"
    )
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--micro-batch", type=int, default=1)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument(
        "--backward",
        nargs="+",
        default=["joint", "sequential"],
        choices=["joint", "sequential"],
        help="backward orders to time, interleaved per method (docs/cluster.md)",
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=989.0, help="peak bf16 TFLOP/s per GPU"
    )
    parser.add_argument("--cpu", action="store_true", help="smoke test on CPU processes (gloo)")
    parser.add_argument("--workdir", default="outputs/gpu_scale")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print(
            "no CUDA GPU: run on a GPU machine, or pass --cpu --model tiny for a smoke test",
            file=sys.stderr,
        )
        return 2
    folder = Path(args.workdir)
    folder.mkdir(parents=True, exist_ok=True)
    rank = int(os.environ.get("RANK", 0))
    if rank == 0:
        build_checkpoint(args.model, folder)
    checkpoint = folder / args.model
    while not (checkpoint / "config.json").exists():  # other ranks wait for rank 0's save
        time.sleep(1)
    results = [
        run_one(m, checkpoint, args, order)
        for i, m in enumerate(args.methods)
        for order in (args.backward if i % 2 == 0 else list(reversed(args.backward)))
    ]
    if rank == 0:
        for r in results:
            print(json.dumps(r))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
