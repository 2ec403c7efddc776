"""The learning-rate schedule of every method: a linear warm-up, then constant or a half cosine.

Ours, kept instead of transformers' ``get_cosine_schedule_with_warmup`` /
``get_constant_schedule_with_warmup``: the two agree without warm-up (the demo's
``warmup_ratio: 0``) but differ with one (the method presets' 0.03). Theirs takes its first step
at factor ``0/warmup`` (a step that changes nothing, one of the few an unlearning run takes)
where this one starts at ``1/warmup`` and reaches 1 on the last warm-up step; and past ``total``
(a resumed run given more steps) their cosine rises again where this one stays at 0. Switching
would move the figures of every run with a warm-up.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch

from ..validation import check_number

Schedule = Literal["cosine", "constant"]


def check_schedule(warmup_ratio: float, kind: str) -> None:
    """Raise ``ValueError`` unless ``warmup_ratio`` is in ``[0, 1)`` and ``kind`` a schedule."""
    check_number("warmup_ratio", warmup_ratio, low=0.0, high=1.0)
    if kind not in ("cosine", "constant"):
        raise ValueError(f"scheduler must be 'cosine' or 'constant', got {kind!r}")


def lr_factor(warmup: int, total: int, kind: Schedule) -> Callable[[int], float]:
    """The learning-rate factor of optimizer step ``step`` (0-based): a linear warm-up over
    ``warmup`` steps, then constant (``kind="constant"``) or a half cosine to 0 at ``total``."""

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def warmup_schedule(
    optimizer: torch.optim.Optimizer, total: int, warmup_ratio: float, kind: Schedule
) -> dict[str, Any]:
    """The schedule of a run of ``total`` optimizer steps that spends
    ``ceil(warmup_ratio * total)`` of them warming up, as Lightning's ``lr_scheduler`` entry
    (the scheduler, stepped at every optimizer step)."""
    total = max(int(total), 1)
    warmup = int(math.ceil(warmup_ratio * total))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(warmup, total, kind))
    return {"scheduler": scheduler, "interval": "step"}
