"""Per-document targets: where each forget document would land under retraining, and a stop on them.

The approximate-retrain stop (:class:`~.callbacks.ApproximateRetrainStopping`) lands the forget
split's *mean* perplexity on the original model's perplexity on unseen text of the same kind, but
each document lands somewhere else: the documents the model knew best stay the most recognisable,
others overshoot. A per-document target says where each one should be. The quantity is a
document's **mean token log-likelihood** ``l(d) = -ln ppl(d)`` (nats per token; the confidence of
the competition score, what the methods' losses move).

Two estimates, neither of which reads a retrained model (a retrained model is the yardstick only):

* **from a never-seen reference model** ``r`` (the checkpoint before fine-tuning, or the untouched
  pre-trained model): ``t(d) = l_r(d) + shift``, where ``shift`` is the mean over the approximate
  split (unseen by both models) of ``l_seen(a) - l_r(a)``: what training moved unseen documents of
  the same kind. The reference keeps each document's own difficulty; the shift adds what training
  on the rest of the data did to text of this kind.
* **quantile matching** (no such model): the forget documents ranked by their log-likelihood under
  the model to unlearn get the approximate split's quantiles at the same ranks
  (``t(d_(k)) = Q_approx((k - 1/2) / n)``): the best-known document gets the approximate split's
  highest log-likelihood, and so on. It keeps the order, not each document's own difficulty.

The **tolerance** (half-width of each document's band) is fixed by one rule before any training,
from the approximate split alone: half the estimator's own error on documents whose answer is
known. The approximate documents are unseen, so their log-likelihood under the model to unlearn
*is* their "retrained" value: for the reference estimate the error is the spread of the shift
(``std_a(l_seen(a) - l_r(a))``, the leave-one-out error of ``l_r(a) + shift``); for quantile
matching it is the root-mean-square error of predicting each approximate document from the other
approximate documents' quantile at its rank. ``tolerance = error / 2``: aiming closer than the
estimate's own error buys nothing, and half of it keeps most documents that land inside the band
on the right side of the estimate's noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DocumentTargets",
    "DocumentStopping",
    "DocumentMask",
    "DocumentTargeting",
    "document_loglik",
]


def document_loglik(split_documents: Mapping[str, Sequence[Any]]) -> dict[int, float]:
    """``{doc_index: mean token log-likelihood}`` from a measurement's per-document columns
    (``Measurement.documents[split]``: ``doc_index`` and ``ppl``); a non-finite perplexity gives
    ``-inf`` (a diverged document)."""
    out = {}
    for doc, ppl in zip(split_documents["doc_index"], split_documents["ppl"]):
        value = -math.log(ppl) if ppl is not None and 0 < ppl < math.inf else -math.inf
        out[int(doc)] = value
    return out


def _values(documents: Mapping[int, float], what: str) -> np.ndarray:
    values = np.array(list(documents.values()), dtype=np.float64)
    if values.size < 2 or not np.isfinite(values).all():
        raise ValueError(
            f"per-document targets need at least two documents with a finite log-likelihood in "
            f"{what}, got {values.tolist()}: give the data module a larger {what.split()[0]} split"
        )
    return values


@dataclass
class DocumentTargets:
    """Each forget document's target mean token log-likelihood and the band around it.

    Attributes:
        target: ``{doc_index: target}`` for every forget document.
        tolerance: the band's half-width (nats per token), the same for every document.
        kind: ``"reference"`` (a never-seen reference model plus the approximate shift) or
            ``"quantiles"`` (quantile matching on the approximate split).
        shift: the approximate split's mean ``l_seen - l_reference`` (``reference`` only).
        error: the estimator's error on the approximate split (the tolerance is half of it).
    """

    target: dict[int, float]
    tolerance: float
    kind: str
    shift: float | None = None
    error: float = math.nan
    _table: dict[str, Tensor] = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------ estimates
    @classmethod
    def from_reference(
        cls,
        seen_forget: Mapping[int, float],
        seen_approximate: Mapping[int, float],
        reference_forget: Mapping[int, float],
        reference_approximate: Mapping[int, float],
    ) -> DocumentTargets:
        """Targets ``l_reference(d) + shift`` (see the module docstring); each argument is
        ``{doc_index: mean token log-likelihood}`` (:func:`document_loglik`)."""
        common = sorted(set(seen_approximate) & set(reference_approximate))
        if set(seen_forget) != set(reference_forget):
            raise ValueError(
                "the reference model was scored on other forget documents than the model to "
                f"unlearn ({sorted(reference_forget)} vs {sorted(seen_forget)})"
            )
        diffs = _values(
            {d: seen_approximate[d] - reference_approximate[d] for d in common},
            "approximate split (scored by both models)",
        )
        _values(dict(reference_forget), "forget split under the reference model")
        shift = float(diffs.mean())
        error = float(diffs.std(ddof=1))
        target = {int(d): float(v) + shift for d, v in reference_forget.items()}
        return cls(target=target, tolerance=error / 2.0, kind="reference", shift=shift, error=error)

    @classmethod
    def from_quantiles(
        cls, seen_forget: Mapping[int, float], seen_approximate: Mapping[int, float]
    ) -> DocumentTargets:
        """Targets by quantile matching on the approximate split (see the module docstring)."""
        approx = np.sort(_values(dict(seen_approximate), "approximate split"))
        forget = _values(dict(seen_forget), "forget split")
        order = np.argsort(np.argsort(forget, kind="stable"), kind="stable")
        levels = (order + 0.5) / forget.size
        values = np.quantile(approx, levels)
        docs = list(seen_forget)
        target = {int(docs[i]): float(values[i]) for i in range(len(docs))}
        # the estimator's error where the answer is known: each approximate document predicted
        # from the quantile of the others at its rank among all of them
        n = approx.size
        misses = [
            approx[k] - float(np.quantile(np.delete(approx, k), (k + 0.5) / n)) for k in range(n)
        ]
        error = float(np.sqrt(np.mean(np.square(misses))))
        return cls(target=target, tolerance=error / 2.0, kind="quantiles", error=error)

    # ------------------------------------------------------------------ reading
    def lookup(self, doc_index: Tensor) -> Tensor:
        """The targets of a batch's rows (``doc_index``: ``[rows]``), on its device, float32."""
        table = self._table.get(str(doc_index.device))
        if table is None:
            size = max(self.target) + 1
            values = torch.full((size,), math.nan, dtype=torch.float32)
            for doc, value in self.target.items():
                values[doc] = value
            table = self._table[str(doc_index.device)] = values.to(doc_index.device)
        if int(doc_index.max()) >= table.numel() or int(doc_index.min()) < 0:
            raise KeyError(self._missing(doc_index))
        out = table[doc_index]
        if bool(torch.isnan(out).any()):
            raise KeyError(self._missing(doc_index))
        return out

    def _missing(self, doc_index: Tensor) -> str:
        missing = sorted({int(d) for d in doc_index.tolist()} - set(self.target))
        return (
            f"forget documents {missing} have no per-document target: the training forget set "
            "must be the forget evaluation split (the same documents, in the same source order)"
        )

    def gaps(self, values: Mapping[int, float]) -> dict[int, float]:
        """``{doc: value - target}`` for the documents measured in ``values``."""
        return {d: float(v) - self.target[d] for d, v in values.items() if d in self.target}

    def within(self, values: Mapping[int, float]) -> dict[int, bool]:
        """Which measured documents are inside their band."""
        return {d: abs(g) <= self.tolerance for d, g in self.gaps(values).items()}

    def fraction_within(self, values: Mapping[int, float]) -> float:
        """The fraction of the target documents inside their band (an unmeasured one is not)."""
        return sum(self.within(values).values()) / max(1, len(self.target))

    def reached(self, values: Mapping[int, float]) -> set[int]:
        """The documents at or below the top of their band (a one-sided method is done with
        them: a per-document mask leaves them out of the forget term)."""
        return {d for d, g in self.gaps(values).items() if g <= self.tolerance}

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "tolerance": self.tolerance,
            "error": self.error,
            "shift": self.shift,
            "target": {str(d): v for d, v in sorted(self.target.items())},
        }


class DocumentStopping:
    """Stop on the forget documents one by one: every one inside its band, or no progress.

    After each check it records the fraction of forget documents inside their band and the mean
    distance of the documents outside it to their band (nats per token). A check makes progress
    when the fraction rises above its best so far or the distance falls below its best so far;
    training stops when every document is inside, or after ``patience`` checks in a row without
    progress (the documents still outside are not coming in: more steps would only move the
    others). The step of that check is ``stopped_step``. A non-finite log-likelihood (a diverged
    model) stops at once.

    It has the attributes the workflow reads from any stop (``target_ppl``, ``tolerance``,
    ``stopped_step``, ``history``, ``check``); ``targets`` is set by the workflow before training.

    Args:
        patience: checks without progress before stopping.
        monitor_split: the split whose documents carry the targets.
    """

    def __init__(self, *, patience: int = 2, monitor_split: str = "forget") -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be an integer >= 1, got {patience!r}")
        self.patience = patience
        self.monitor_split = monitor_split
        self.targets: DocumentTargets | None = None
        self.target_ppl: float | None = None  # the mean target, for the report and the plot
        self.tolerance = 0.0  # the mean stop's relative tolerance: unused here
        self.stopped_step: int | None = None
        self.history: list[dict[str, Any]] = []
        self._best = (-1.0, math.inf)  # (fraction inside, distance outside) best so far
        self._since_best = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "stopped_step": self.stopped_step,
            "history": list(self.history),
            "best": self._best,
            "since_best": self._since_best,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.stopped_step = state.get("stopped_step")
        self.history = list(state.get("history", []))
        self._best = tuple(state.get("best", (-1.0, math.inf)))
        self._since_best = int(state.get("since_best", 0))

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self.targets is None:
            raise RuntimeError(
                "DocumentStopping has no per-document targets: the workflow sets them in begin() "
                "(UnlearningWorkflow(documents=DocumentTargeting()).run(...))"
            )

    def fraction(self, values: Mapping[int, float]) -> float:
        """The fraction of the targets' documents inside their band."""
        return self.targets.fraction_within(values)

    def distance(self, values: Mapping[int, float]) -> float:
        """The mean distance of the measured documents to their band (0 inside it)."""
        gaps = self.targets.gaps(values).values()
        return float(np.mean([max(abs(g) - self.targets.tolerance, 0.0) for g in gaps]))

    def check(self, trainer: Any, values: Mapping[int, float]) -> bool:
        """Record one check's per-document log-likelihoods (``{doc: l}``) and decide."""
        step = int(trainer.global_step)
        diverged = not all(math.isfinite(v) for v in values.values())
        fraction = self.fraction(values)
        distance = math.inf if diverged else self.distance(values)
        self.history.append({"step": step, "within": fraction, "distance": distance})
        best_fraction, best_distance = self._best
        if fraction > best_fraction + 1e-12 or distance < best_distance - 1e-12:
            self._best = (max(fraction, best_fraction), min(distance, best_distance))
            self._since_best = 0
        else:
            self._since_best += 1
        should_stop = diverged or fraction >= 1.0 or self._since_best >= self.patience
        reduce = getattr(getattr(trainer, "strategy", None), "reduce_boolean_decision", None)
        if reduce is not None:
            should_stop = bool(reduce(should_stop, all=False))
        if should_stop:
            trainer.should_stop = True
            if self.stopped_step is None:
                self.stopped_step = step
        return should_stop


class DocumentMask:
    """The forget documents that left the forget term: a document at (or past) its target stops
    contributing, so a one-sided method (GA+GD, NPO+GD) stops pushing it while it pushes the
    others. The workflow refreshes :attr:`reached` at every check (with a check after every step,
    every step); the module drops those documents' rows from each forget batch before its forget
    term (:meth:`apply`)."""

    def __init__(self) -> None:
        self.reached: set[int] = set()

    def apply(self, batch: dict[str, Any]) -> dict[str, Any] | None:
        """The batch without the rows of reached documents (``None`` when no row is left)."""
        doc = batch.get("doc_index")
        if doc is None:
            raise ValueError(
                "the per-document mask needs the forget batches' 'doc_index': train on document "
                "windows (UnlearningDataModule with packing: false)"
            )
        keep = [i for i, d in enumerate(doc.tolist()) if int(d) not in self.reached]
        if len(keep) == doc.numel():
            return batch
        if not keep:
            return None
        rows = torch.tensor(keep, device=doc.device)
        size = doc.numel()
        return {
            k: v.index_select(0, rows)
            if torch.is_tensor(v) and v.dim() and v.size(0) == size
            else v
            for k, v in batch.items()
        }


class DocumentTargeting:
    """Per-document targets for a workflow: ``UnlearningWorkflow(documents=DocumentTargeting())``.

    After the before-measurement it builds each forget document's target
    (:class:`DocumentTargets`), hands them to the module (``module.document_targets``, read by
    per-document methods such as :class:`~lightning_unlearn.methods.DocumentTargetMatching`) and,
    with ``mask``, a :class:`DocumentMask` (``module.forget_mask``: any method); at each check it
    reads the forget documents' values for the mask and the stop (:class:`DocumentStopping`,
    replacing the mean-perplexity stop; checks as the Trainer schedules them, every step with
    ``val_check_interval=1``); the report shows each forget document's target beside its value.

    Args:
        reference: a never-seen reference model (the checkpoint before fine-tuning: a path, or
            its measurement on the forget and approximate splits): targets are its per-document
            log-likelihoods plus the approximate split's shift. ``None``: quantile matching on the
            approximate split.
        mask: give the module the per-document mask (documents at their target leave the
            forget term).
        patience: the stop's checks without progress (:class:`DocumentStopping`).
    """

    def __init__(self, *, reference: Any = None, mask: bool = False, patience: int = 2) -> None:
        self.reference = reference
        self.mask = DocumentMask() if mask else None
        self.stop: DocumentStopping | None = DocumentStopping(patience=patience)
        self.monitor_split, self.reference_split = "forget", "approximate"
        self.targets: DocumentTargets | None = None

    def bind(self, *, stop: bool, monitor_split: str, reference_split: str) -> None:
        """The workflow's settings: whether it stops, and the forget and approximate splits."""
        self.monitor_split, self.reference_split = monitor_split, reference_split
        if self.stop is not None:
            self.stop.monitor_split = monitor_split
        self.stop = self.stop if stop else None

    def begin(self, workflow: Any, module: Any, datamodule: Any) -> DocumentTargets:
        """Targets from the before-measurement (and the reference model), given to the module."""
        before = workflow.before.documents
        for split in (self.monitor_split, self.reference_split):
            if "ppl" not in before.get(split, {}):
                raise ValueError(
                    f"per-document targets need each {split} document's perplexity before "
                    "unlearning: give the data module a "
                    f"'{split}' split and keep lightning_unlearn.evaluation.Perplexity in metrics"
                )
        seen_forget = document_loglik(before[self.monitor_split])
        seen_approx = document_loglik(before[self.reference_split])
        if self.reference is None:
            self.targets = DocumentTargets.from_quantiles(seen_forget, seen_approx)
        else:
            reference = self.reference
            if not hasattr(reference, "documents"):  # a path: measure it once
                reference = workflow.measure_checkpoint(
                    str(reference),
                    datamodule,
                    generation=False,
                    splits=[self.monitor_split, self.reference_split],
                )
            self.targets = DocumentTargets.from_reference(
                seen_forget,
                seen_approx,
                document_loglik(reference.documents[self.monitor_split]),
                document_loglik(reference.documents[self.reference_split]),
            )
        module.document_targets = self.targets
        if self.mask is not None:
            self.mask.reached = self.targets.reached(seen_forget)
            module.forget_mask = self.mask
        if self.stop is not None:
            self.stop.targets = self.targets
        return self.targets

    def check(self, trainer: Any, columns: Mapping[str, Any]) -> tuple[bool, float]:
        """One check's per-document values of the forget split (``doc_index`` and ``ppl``):
        refresh the mask, ask the stop; returns ``(stop, fraction within the band)``."""
        values = document_loglik(columns)
        if self.mask is not None:
            self.mask.reached = self.targets.reached(values)
        fraction = self.targets.fraction_within(values)
        stop = self.stop.check(trainer, values) if self.stop is not None else False
        return stop, fraction

    def report_columns(self) -> dict[str, dict[str, list]]:
        """``{"forget": {"doc_index": [...], "target ppl": [...]}}`` for the report's documents."""
        docs = sorted(self.targets.target)
        return {
            self.monitor_split: {
                "doc_index": docs,
                "target ppl": [math.exp(-self.targets.target[d]) for d in docs],
            }
        }
