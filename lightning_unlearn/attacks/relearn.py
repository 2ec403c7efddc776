"""Relearning attack: a few fine-tuning steps on a copy, then does the forget set come back?

Unlearning that only hides knowledge comes back after a little fine-tuning: on unrelated text
(Lynch et al. 2024, "Eight Methods to Evaluate Robust Unlearning in LLMs", arXiv:2402.16835), or
on a small part of the forget set itself, after which the *rest* of it returns too (Hu et al.
2024, "Jogging the Memory of Unlearned LLMs Through Targeted Relearning Attacks",
arXiv:2406.13356; Deeb & Roger 2024, "Do Unlearning Methods Remove Information from Language Model
Weights?", arXiv:2410.08827). A model that never saw the forget set (exact retrain) relearns the
same slice too, and learns something about the rest from it (same domain), so the attack is always
read against the same attack on the exact-retrain and the original models
(:mod:`lightning_unlearn.attacks.recovery`).

What is implemented:

* :func:`forget_slice`: split the forget set's documents into a *slice* to relearn on and the
  *rest* to score, disjoint, deterministic;
* :func:`slice_batches` / :func:`text_batches`: training batches (``input_ids``,
  ``attention_mask``, ``labels``, as the data module's) of the slice's windows or of a split;
* :func:`relearn`: fine-tune a deep copy with AdamW on next-token NLL (full fine-tuning, constant
  learning rate, no warm-up, no clipping), yielding the copy after each requested step count;
* :class:`RelearnAttack`: the settings of one relearning attack and its scored variants.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..losses import token_nll
from ..models import model_inputs, resolve_dtype

__all__ = [
    "RelearnAttack",
    "RelearnData",
    "forget_slice",
    "relearn",
    "slice_batches",
    "text_batches",
]

#: what a relearning attack trains on: retain text, general text, or a slice of the forget set
RelearnData = Literal["retain", "general", "forget_slice"]
RELEARN_DATA: tuple[str, ...] = ("retain", "general", "forget_slice")

#: the columns a training batch is built from (``prompt_len`` masks the prompt of QA records)
_ROW_COLUMNS = ("input_ids", "position_ids", "prompt_len")


# ----------------------------------------------------------------------------------- the slice
def forget_slice(
    doc_indices: Sequence[int], *, fraction: float = 0.25, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Split the forget set's documents into a slice (relearned on) and the rest (scored).

    The slice is ``round(fraction * n)`` of the ``n`` distinct documents, at least one and at most
    ``n - 1``, drawn with ``random.Random(seed)`` (the same documents for the same input, seed
    and fraction, whatever the order of ``doc_indices``).

    Args:
        doc_indices: the forget documents' ``doc_index`` values (repeats, e.g. one per window,
            count once).
        fraction: share of the documents in the slice, in ``(0, 1)`` (0.25 in the issue).
        seed: seed of the draw.

    Returns:
        ``(slice, rest)``: sorted, disjoint, together every document.

    Raises:
        ValueError: ``fraction`` is not in ``(0, 1)``, or there are fewer than two documents (one
            for the slice and one to score).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"slice fraction must be in (0, 1), got {fraction!r}")
    documents = sorted({int(d) for d in doc_indices})
    if len(documents) < 2:
        raise ValueError(
            f"a forget slice needs at least 2 forget documents (one to relearn on, one to score), "
            f"got {len(documents)}: {documents}"
        )
    size = min(len(documents) - 1, max(1, round(fraction * len(documents))))
    chosen = sorted(random.Random(seed).sample(documents, size))
    rest = sorted(set(documents) - set(chosen))
    if set(chosen) & set(rest) or len(chosen) + len(rest) != len(documents):
        raise AssertionError("forget slice and rest overlap")  # pragma: no cover - by construction
    return chosen, rest


# ----------------------------------------------------------------------------------- batches
def _batches_of_rows(rows: list[dict[str, Any]], pad_token_id: int, batch_size: int) -> list[dict]:
    from ..data import PadCollator

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    collate = PadCollator(pad_token_id)
    return [collate(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]


def _rows(data, indices: Iterable[int] | None = None) -> list[dict[str, Any]]:
    columns = [c for c in _ROW_COLUMNS if c in data.column_names]
    table = data.select_columns(columns)
    if indices is not None:
        table = table.select(list(indices))
    return [dict(row) for row in table]


def slice_batches(
    datamodule: Any, split_docs: Sequence[int], *, batch_size: int
) -> list[dict[str, Tensor]]:
    """Training batches of the forget evaluation split's windows whose ``doc_index`` is in
    ``split_docs`` (every window of those documents, in the split's order).

    The windows are the ones :meth:`~lightning_unlearn.data.UnlearningDataModule.eval_dataset`
    scores (``doc_index`` numbers documents there), padded by
    :class:`~lightning_unlearn.data.PadCollator` into ``input_ids`` / ``attention_mask`` /
    ``labels`` (``-100`` on padding), like the data module's training batches.

    Raises:
        ValueError: no window of the forget split belongs to ``split_docs``.
    """
    data = datamodule.eval_dataset("forget")
    wanted = {int(d) for d in split_docs}
    indices = [i for i, d in enumerate(data["doc_index"]) if int(d) in wanted]
    if not indices:
        raise ValueError(
            f"no window of the forget evaluation split belongs to documents {sorted(wanted)}; "
            "take the slice from datamodule.eval_dataset('forget')['doc_index']"
        )
    return _batches_of_rows(_rows(data, indices), datamodule.pad_token_id, batch_size)


def text_batches(datamodule: Any, split: str, *, batch_size: int) -> list[dict[str, Tensor]]:
    """Training batches of every window of ``split`` (``"retain"`` or ``"general"``).

    The windows come from the evaluation split of that name when the data module has one, else
    from the training set of that name (``retain`` only): the same documents in the demo's and the
    paper's data, where the retain split is both trained on and evaluated.

    Raises:
        KeyError: the data module has neither an evaluation split nor a training set ``split``.
    """
    if split in getattr(datamodule, "eval_sources", {}):
        data = datamodule.eval_dataset(split)
    elif split in getattr(datamodule, "train_sources", {}):
        data = datamodule.train_dataset(split)
    else:
        raise KeyError(
            f"no {split!r} text to relearn on: the data module has evaluation splits "
            f"{sorted(getattr(datamodule, 'eval_sources', {}))} and training sets "
            f"{sorted(getattr(datamodule, 'train_sources', {}))}; pass {split}=... to it"
        )
    return _batches_of_rows(_rows(data), datamodule.pad_token_id, batch_size)


# ----------------------------------------------------------------------------------- relearning
def _cycle(batches: Iterable[dict]) -> Iterator[dict]:
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise ValueError(
                "relearn: no batches to train on (an empty list, or a one-shot iterator already "
                "used up: pass a list or a DataLoader, which can be iterated again)"
            )


class _PrivateRNG:
    """Random state of the attack, kept apart from the caller's global RNG (dropout, if any)."""

    def __init__(self, seed: int, device: torch.device) -> None:
        self.devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=self.devices):
            torch.manual_seed(seed)
            self.state = self._get()

    def _get(self) -> tuple[Tensor, list[Tensor]]:
        return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in self.devices]

    @contextmanager
    def active(self) -> Iterator[None]:
        with torch.random.fork_rng(devices=self.devices):
            cpu, cuda = self.state
            torch.set_rng_state(cpu)
            for device, state in zip(self.devices, cuda):
                torch.cuda.set_rng_state(state, device)
            yield
            self.state = self._get()


def _unwrap(model: nn.Module) -> nn.Module:
    """An ``UnlearningModule``'s trained network (``module.model``), or the model itself."""
    inner = getattr(model, "model", None)
    if hasattr(model, "training_step") and isinstance(inner, nn.Module):
        return inner
    return model


def relearn(
    model: nn.Module,
    batches: Iterable[dict[str, Tensor]],
    *,
    steps: Sequence[int] = (1, 2, 4, 8),
    learning_rate: float = 1e-5,
    weight_decay: float = 0.0,
    seed: int = 0,
    dtype: str | torch.dtype = torch.float32,
) -> Iterator[tuple[int, nn.Module]]:
    """Fine-tune a copy of ``model`` on ``batches`` and yield it after each step count.

    ``model`` is deep-copied **once**, when iteration starts; the original is never modified (no
    parameter, buffer, ``requires_grad`` or train/eval flag changes). Every floating-point
    parameter of the copy trains (full fine-tuning), with AdamW at a constant ``learning_rate``
    on the mean next-token NLL of each batch (:func:`~lightning_unlearn.losses.token_nll`), one
    optimizer step per batch, cycling through ``batches`` in order.

    For each ``k`` of ``sorted(set(steps))`` the generator yields ``(k, copy)`` once the copy has
    taken ``k`` optimizer steps (``k = 0``: the untrained copy). It is **the same copy** every
    time, in eval mode, trained on when the iterator advances: score it (or ``copy.deepcopy`` it)
    before asking for the next ``k``, and do not modify it.

    Args:
        model: a causal LM (an ``UnlearningModule`` is unwrapped to its ``model``). Merge LoRA
            adapters first to attack the merged weights; a peft model trains all its weights.
        batches: training-style batches (``input_ids``, ``attention_mask``, ``labels`` with -100
            on non-targets), e.g. :func:`slice_batches` or :func:`text_batches`; a list or a
            re-iterable loader (it is iterated again for every pass).
        steps: the step counts to yield at (non-negative integers).
        learning_rate: AdamW learning rate (constant).
        weight_decay: AdamW decoupled weight decay.
        seed: seed of the copy's random state during training (dropout), kept apart from the
            global RNG.
        dtype: the dtype the copy trains (and is scored) in, whatever the checkpoint's:
            ``float32`` master weights by default. A bf16 copy trained in place rounds most small
            AdamW updates away (on a tiny model one step at lr 1e-5 changed 11% of the weights in
            bf16 against 73% in float32), so the attack would be weaker on a bf16 checkpoint and
            attack the two ends of a comparison with different strengths.

    Raises:
        ValueError: ``steps`` is empty or holds a negative or non-integer count, ``learning_rate``
            is not positive, ``batches`` is empty, or the loss becomes NaN/infinite.
    """
    targets = _check_steps(steps)
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
    attacked = copy.deepcopy(_unwrap(model)).to(resolve_dtype(dtype))
    params = [p for p in attacked.parameters() if p.is_floating_point()]
    for p in params:
        p.requires_grad_(True)
        p.grad = None
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    device = params[0].device if params else torch.device("cpu")
    rng = _PrivateRNG(seed, device)
    stream = _cycle(batches)
    done = 0
    for k in targets:
        if k > done:
            attacked.train()
            with rng.active(), torch.enable_grad():
                while done < k:
                    loss = _step_loss(attacked, next(stream), device)
                    if not torch.isfinite(loss):
                        raise ValueError(
                            f"relearn: the NLL became {float(loss)} at step {done + 1} (learning "
                            f"rate {learning_rate:g}); lower the learning rate"
                        )
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    done += 1
        attacked.eval()
        yield k, attacked


def _check_steps(steps: Sequence[int]) -> list[int]:
    values = list(steps)
    if not values:
        raise ValueError("steps is empty: give the step counts to yield at, e.g. (1, 2, 4, 8)")
    for k in values:
        if isinstance(k, bool) or not float(k).is_integer() or k < 0:
            raise ValueError(f"steps must be non-negative integers, got {k!r}")
    return sorted({int(k) for k in values})


def _step_loss(model: nn.Module, batch: dict[str, Any], device: torch.device) -> Tensor:
    batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
    out = model(**model_inputs(batch), use_cache=False)
    logits = out.logits if hasattr(out, "logits") else out
    return token_nll(logits, batch["labels"])


# ----------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class RelearnAttack:
    """A relearning attack's settings: fine-tune a copy for ``k`` steps, score it at each ``k``.

    Args:
        steps: the step counts scored (one training run, scored at each).
        data: what the copy trains on: ``"retain"`` or ``"general"`` text (knowledge coming back
            from unrelated fine-tuning), or ``"forget_slice"``: a held-out ``slice_fraction`` of
            the forget documents, after which only the *rest* of the forget set is scored.
        slice_fraction: share of the forget documents relearned on (``"forget_slice"`` only).
        learning_rate: AdamW learning rate, constant (1e-5: typical fine-tuning; the relearning
            papers above use 1e-5 to 1e-4).
        seed: seed of the slice's draw and of the training's random state.
        batch_size: windows per step; ``None`` takes the data module's ``batch_size``.
        dtype: the dtype every attacked copy trains in (``float32`` master weights whatever the
            checkpoint's, see :func:`relearn`): one attack object attacks every end alike.
    """

    steps: tuple[int, ...] = (1, 2, 4, 8)
    data: RelearnData = "forget_slice"
    slice_fraction: float = 0.25
    learning_rate: float = 1e-5
    seed: int = 0
    batch_size: int | None = None
    dtype: str | torch.dtype = "float32"

    def __post_init__(self) -> None:
        if self.data not in RELEARN_DATA:
            raise ValueError(f"RelearnAttack.data must be one of {RELEARN_DATA}, got {self.data!r}")
        object.__setattr__(self, "steps", tuple(_check_steps(self.steps)))
        if not 0.0 < self.slice_fraction < 1.0:
            raise ValueError(f"slice_fraction must be in (0, 1), got {self.slice_fraction!r}")
        if not (isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if resolve_dtype(self.dtype) is None:
            raise ValueError("RelearnAttack.dtype must name a dtype (float32, bf16...), got None")

    @property
    def name(self) -> str:
        """``relearn_<data>``; a variant appends ``_k<steps>``."""
        return f"relearn_{self.data}"

    def variant_names(self) -> list[str]:
        return [f"{self.name}_k{k}" for k in self.steps]

    def split(self, datamodule: Any) -> tuple[list[int], list[int]]:
        """``(slice, rest)`` of the data module's forget evaluation split (every document of the
        split, whatever ``eval_subset`` scores)."""
        doc_index = datamodule.eval_dataset("forget")["doc_index"]
        return forget_slice(doc_index, fraction=self.slice_fraction, seed=self.seed)

    def excluded(self, datamodule: Any) -> set[int]:
        """The forget ``doc_index`` values that must not be scored: the slice, or none."""
        return set(self.split(datamodule)[0]) if self.data == "forget_slice" else set()

    def batches(self, datamodule: Any) -> list[dict[str, Tensor]]:
        """The batches the copy trains on."""
        size = self.batch_size or int(datamodule.batch_size)
        if self.data == "forget_slice":
            return slice_batches(datamodule, self.split(datamodule)[0], batch_size=size)
        return text_batches(datamodule, self.data, batch_size=size)

    def variants(self, model: nn.Module, datamodule: Any) -> Iterator[tuple[str, nn.Module, set]]:
        """``(name, attacked copy, excluded forget doc_index values)`` for each ``k``.

        Names are ``relearn_<data>_k<k>``. The copy is the same object every time, trained on as
        the iterator advances (see :func:`relearn`): score it before the next variant. ``model``
        is never modified.
        """
        excluded = self.excluded(datamodule)
        for k, attacked in relearn(
            model,
            self.batches(datamodule),
            steps=self.steps,
            learning_rate=self.learning_rate,
            seed=self.seed,
            dtype=self.dtype,
        ):
            yield f"{self.name}_k{k}", attacked, set(excluded)
