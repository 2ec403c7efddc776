"""What fits on one GPU: the memory planner's estimate for 1B, 8B and 13B models, per method
family, with full fine-tuning, LoRA, activation checkpointing and ZeRO-3 offload.

Arithmetic only (``lightning_unlearn.planner``; nothing is loaded), so it runs in seconds; the
model-state formulas are checked against DeepSpeed's own estimators by ``tests/test_planner.py``.

    python benchmarks/memory_table.py            # the table into docs/cluster.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

MODELS = (
    ("llama3.2-1b", "Llama-3.2-1B"),
    ("llama3-8b", "Llama-3-8B"),
    ("llama-13b", "Llama-2-13B"),
)
#: method families: (label, short name of a representative)
FAMILIES = (
    ("GA, RL, CE-U (forget only)", "ga"),
    ("GA+GD, SimNPO, WGA, SatImp (NLL retain)", "ga_gd"),
    ("NPO, UNDIAL, AS (reference)", "npo"),
    ("GA+KL, NPO+KL (KL retain, reference)", "ga_kl"),
)
#: (label, preset, lora, gradient checkpointing)
SETUPS = (
    ("full fine-tuning", "single_gpu", False, False),
    ("full + checkpointing", "single_gpu", False, True),
    ("LoRA r=8", "single_gpu", True, False),
    ("LoRA r=8 + checkpointing", "single_gpu", True, True),
    ("ZeRO-3, optimizer offloaded, + checkpointing", "deepspeed_zero3_offload", False, True),
)
GPUS = (24, 40, 80)


def _gib(size, method: str, layout, lora: bool, checkpointing: bool, **options) -> float:
    """The planner's GiB per GPU of ``method`` (a short name) on one GPU."""
    from lightning_unlearn.planner import GIB, method_needs, plan_memory

    plan = plan_memory(
        size,
        method=method_needs(method),
        layout=layout,
        gpus=1,
        lora=lora,
        gradient_checkpointing=checkpointing,
        **options,
    )
    return plan.gpu_total / GIB


def table(*, seq_len: int, micro_batch: int) -> str:
    from lightning_unlearn.planner import (
        PRESETS,
        default_backward,
        load_model_config,
        model_size,
    )

    header = ["model", "setup", *(label for label, _ in FAMILIES)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, name in MODELS:
        config = load_model_config(key)
        for label, preset, lora, checkpointing in SETUPS:
            size = model_size(config, lora_rank=8 if lora else None)
            layout = PRESETS[preset]
            cells = []
            for _, short in FAMILIES:
                shape = dict(seq_len=seq_len, micro_batch=micro_batch, gpu_memory_gib=80.0)
                gib = _gib(size, short, layout, lora, checkpointing, **shape)
                fits = [g for g in GPUS if gib <= g]
                cells.append(f"{gib:.1f} ({fits[0]} GB)" if fits else f"{gib:.1f} (> 80 GB)")
            order = default_backward(layout)
            lines.append(f"| {name} | {label} ({order} backward) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison(*, seq_len: int, micro_batch: int) -> str:
    """What the sequential backward saves: joint vs sequential for the retain methods."""
    from lightning_unlearn.planner import (
        PRESETS,
        load_model_config,
        method_needs,
        model_size,
    )

    lines = ["| model | setup | method | joint (GiB) | sequential (GiB) |", "|---|---|---|---|---|"]
    for key, name in MODELS[1:]:
        for label, lora, checkpointing in (
            ("LoRA r=8", True, False),
            ("LoRA r=8 + checkpointing", True, True),
        ):
            size = model_size(load_model_config(key), lora_rank=8 if lora else None)
            for method in ("ga_gd", "ga_kl"):
                layout, shape = (
                    PRESETS["single_gpu"],
                    dict(seq_len=seq_len, micro_batch=micro_batch),
                )
                totals = [
                    _gib(size, method, layout, lora, checkpointing, backward=order, **shape)
                    for order in ("joint", "sequential")
                ]
                lines.append(
                    f"| {name} | {label} | {method_needs(method).name} | "
                    f"{totals[0]:.1f} | {totals[1]:.1f} |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--micro-batch", type=int, default=1)
    p.add_argument("--markdown", default=str(common.ROOT / "docs" / "cluster.md"))
    p.add_argument("--print-only", action="store_true")
    args = p.parse_args(argv)
    kw = dict(seq_len=args.seq_len, micro_batch=args.micro_batch)
    body = "\n".join(
        [
            f"Estimated GiB per GPU on **one** GPU (`lightning-unlearn plan`, bf16-mixed, micro-batch "
            f"{args.micro_batch} x {args.seq_len} tokens, a retain batch of the same size, 2 GiB of "
            "runtime allowance), and the smallest of a 24 / 40 / 80 GB GPU it fits on. Written by "
            "`python benchmarks/memory_table.py` from the planner (arithmetic on the published configs; "
            "activations are +-30%).",
            "",
            table(**kw),
            "",
            "What the sequential backward saves for the methods with a retain term (one GPU, default "
            "preset):",
            "",
            comparison(**kw),
        ]
    )
    if args.print_only:
        print(body)
    else:
        common.replace_section(args.markdown, "memory_table", body, title="Cluster")
        print(f"wrote the table into {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
