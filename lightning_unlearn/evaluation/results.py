"""Reading evaluation results: flat metric dicts from the evaluator or from ``trainer.validate``.

The evaluator returns keys such as ``forget/ppl`` and ``mia/loss_auc``; Lightning logs them as
``val/forget/ppl`` (or ``test/...``) and ``trainer.validate`` returns a list with one dict per
dataloader, keys possibly suffixed with ``/dataloader_idx_N``. :func:`normalise_metrics` turns any
of these into one plain ``{"forget/ppl": float, ...}`` dict.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["normalise_metrics", "approximate_target", "EmptyApproximateSplitError"]

_PREFIX = re.compile(r"^(val|validation|test)/")
_SUFFIX = re.compile(r"/dataloader_idx_\d+$")


class EmptyApproximateSplitError(ValueError):
    """No usable approximate-split perplexity: the approximate-retrain target cannot be set."""


def _to_float(value: Any) -> float:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if value.numel() != 1:
            raise ValueError(
                f"expected a scalar metric, got a tensor of shape {tuple(value.shape)}"
            )
        return float(value.item())
    return float(value)


def normalise_metrics(
    metrics: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
) -> dict[str, float]:
    """Flatten evaluator / ``trainer.validate`` / ``trainer.callback_metrics`` output.

    Strips a leading ``val/``, ``validation/`` or ``test/`` and a trailing ``/dataloader_idx_N``,
    converts tensors to floats and merges a list of per-dataloader dicts. Non-numeric values are
    dropped.
    """
    if metrics is None:
        return {}
    parts = [metrics] if isinstance(metrics, Mapping) else list(metrics)
    out: dict[str, float] = {}
    for part in parts:
        if not isinstance(part, Mapping):
            raise TypeError(
                f"expected a dict of metrics or a list of dicts, got {type(part).__name__}"
            )
        for key, value in part.items():
            try:
                number = _to_float(value)
            except (TypeError, ValueError):
                continue
            out[_SUFFIX.sub("", _PREFIX.sub("", str(key)))] = number
    return out


def approximate_target(
    metrics: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None, *, split: str = "approximate"
) -> float:
    """The approximate-retrain target: the original model's perplexity on ``split``.

    Raises:
        EmptyApproximateSplitError: the value is missing, NaN or not positive (an empty split).
    """
    flat = normalise_metrics(metrics)
    value = flat.get(f"{split}/ppl")
    if value is None or not math.isfinite(value) or value <= 0:
        found = f"got {value}" if value is not None else f"no '{split}/ppl' among {sorted(flat)}"
        raise EmptyApproximateSplitError(
            f"{split} split is empty ({found}): cannot set the approximate-retrain target; give "
            f"the data module an {split} source or pass target_ppl"
        )
    return value
