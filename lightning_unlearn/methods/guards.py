"""The checks a training step makes before it trusts its numbers.

A batch must have its parts (:func:`batch_part`) and target tokens (:func:`check_targets`); a loss and every gradient must be finite
(:func:`check_finite`, :func:`check_gradients`); and, when a run sets ``max_forget_nll``, the
forget NLL must stay under that bound (:class:`ForgetNLLGuard`): gradient ascent that runs away
destroys the model within a few steps, and stopping with :class:`DivergenceError` keeps the last
checkpoint, written before the step, as the run's result.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from ..losses import IGNORE_INDEX, token_nll
from ..models import model_inputs
from ..validation import check_number


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss or gradient, or the forget loss ran past its bound."""


def batch_part(batch: Any, part: str, owner: str) -> dict[str, Tensor]:
    """The ``part`` (``"forget"`` or ``"retain"``) of a training batch, checked by
    :func:`check_targets`; ``owner`` (the method) is named when a retain part is missing."""
    found = batch.get(part) if isinstance(batch, dict) else None
    if found is None and part == "forget":
        raise ValueError(
            "training batch has no 'forget' part; use UnlearningDataModule or yield "
            "{'forget': batch, 'retain': batch}"
        )
    if found is None:
        raise ValueError(
            f"{owner} needs retain data but the batch has none; give the data module a "
            f"'{part}' source"
        )
    check_targets(found, part)
    return found


def check_targets(batch: dict[str, Tensor], part: str) -> None:
    """Raise ``ValueError`` unless the ``part`` (forget/retain) batch has a real target token."""
    labels = batch.get("labels")
    if labels is None:
        raise ValueError(f"{part} batch has no 'labels'")
    if not (labels[:, 1:] != IGNORE_INDEX).any():
        raise ValueError(
            f"{part} batch has no real target tokens (every label is -100 after the shift); "
            "check that its documents are not empty and that padding is not the only content"
        )


def check_finite(loss: Tensor, step: int) -> None:
    """Raise :class:`DivergenceError` when the training loss of optimizer step ``step`` is
    NaN or infinite."""
    if not torch.isfinite(loss):
        raise DivergenceError(
            f"non-finite training loss ({loss.item()}) at step {step}; lower the "
            "learning_rate or resume from the last good checkpoint"
        )


def check_gradients(named: Iterable[tuple[str, nn.Parameter]], step: int) -> None:
    """Raise :class:`DivergenceError` naming the first parameter whose gradient is not finite
    (one fused norm per gradient and a single host sync, instead of one sync per tensor)."""
    grads = [(name, p.grad) for name, p in named if p.grad is not None]
    if not grads:
        return
    norms = torch._foreach_norm([g for _, g in grads])
    finite = torch.isfinite(torch.stack(norms))
    if bool(finite.all()):
        return
    name = grads[int((~finite).nonzero()[0])][0]
    raise DivergenceError(
        f"non-finite gradient in '{name}' at step {step}; lower the "
        "learning_rate or resume from the last good checkpoint"
    )


class ForgetNLLGuard:
    """Stop when the forget NLL (mean per token, in nats) passes ``bound``.

    The step's own forward pass on the forget batch is reused: while :meth:`watching` a batch,
    the module hands the logits it computes for exactly that batch to :meth:`offer`; a method
    that never runs the trained model on it costs one more (gradient-free) forward pass.

    Args:
        bound: the largest forget NLL allowed; ``None`` disables the guard.
    """

    def __init__(self, bound: float | None) -> None:
        check_number("max_forget_nll", bound, low=0.0, strict=True, optional=True)
        self.bound = bound
        self._capture: dict[str, Any] | None = None

    @contextmanager
    def watching(self, batch: dict[str, Tensor]) -> Iterator[None]:
        """Keep the logits the module computes for ``batch`` inside this block."""
        self._capture = {"batch": batch} if self.bound is not None else None
        try:
            yield
        finally:
            self._capture = None

    def offer(self, batch: dict[str, Tensor], logits: Tensor) -> None:
        """The module computed ``logits`` for ``batch``: keep them if they are the watched one's."""
        capture = self._capture
        if capture is not None and "logits" not in capture and batch is capture["batch"]:
            capture["logits"] = logits.detach()

    def check(self, model: nn.Module, forget: dict[str, Tensor], step: int) -> None:
        """Raise :class:`DivergenceError` when the forget NLL of ``forget`` is above the bound."""
        if self.bound is None:
            return
        logits = self._capture.get("logits") if self._capture else None
        if logits is None:  # the method did not call self(forget): one more forward pass
            with torch.no_grad():
                logits = model(**model_inputs(forget), use_cache=False).logits
        value = float(token_nll(logits.float(), forget["labels"]))
        if not value <= self.bound:
            raise DivergenceError(
                f"forget NLL {value:.4f} at step {step} is above max_forget_nll="
                f"{self.bound}: gradient ascent is running away. Lower the learning_rate, "
                "stop earlier (ApproximateRetrainStopping) or raise max_forget_nll; the last "
                "checkpoint was written before this step"
            )
