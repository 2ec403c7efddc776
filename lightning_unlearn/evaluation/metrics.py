"""Evaluation metrics as torchmetrics ``Metric``s, so they reduce correctly across ranks.

:class:`UnlearningEvaluator` is what :class:`~lightning_unlearn.methods.base.UnlearningModule`
feeds during validation and test: one forward pass per chunk, ``update(split, stats, batch)``, then
``compute()`` once per epoch on every rank (it synchronises the states) and ``reset()``.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from .mia import MIA_SCORES, MembershipScores, roc_auc, tpr_at_fpr

EVAL_SPLITS = ("forget", "approximate", "retain", "general")

__all__ = ["EVAL_SPLITS", "SplitPerplexity", "UnlearningEvaluator"]


class SplitPerplexity(Metric):
    """Token-level perplexity and next-token accuracy of one split.

    Perplexity is ``exp(sum NLL / number of target tokens)`` over the whole split (not a mean of
    per-batch perplexities), so it is independent of batching and of the number of processes.
    ``compute()`` also returns ``tokens`` (the number of target tokens over all processes); a split
    without tokens gives NaN for the other values.
    """

    full_state_update = False
    higher_is_better = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state(
            "nll_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("tokens", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("correct", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, stats: dict[str, Tensor]) -> None:
        """``stats`` is the output of :func:`lightning_unlearn.losses.token_statistics`."""
        mask = stats["mask"]
        # out of place: states created under inference mode (trainer.validate) must stay usable
        # in a later no-grad validation inside fit
        self.nll_sum = self.nll_sum + (-stats["logprob"] * mask).sum().double()
        self.tokens = self.tokens + mask.sum()
        self.correct = self.correct + stats["correct"].sum()

    def compute(self) -> dict[str, Tensor]:
        tokens = self.tokens.clone()
        if self.tokens == 0:
            nan = torch.tensor(math.nan)
            return {"ppl": nan, "acc": nan, "nll": nan, "tokens": tokens}
        nll = self.nll_sum / self.tokens
        return {
            "ppl": torch.exp(nll).float(),
            "acc": (self.correct.double() / self.tokens).float(),
            "nll": nll.float(),
            "tokens": tokens,
        }


class UnlearningEvaluator(nn.Module):
    """All evaluation metrics of a run, keyed by split.

    ``update(split, stats, batch)`` is fed from one forward pass per chunk; each chunk is one
    document for the membership-inference scores. ``compute()`` returns a flat dict:

    * ``{split}/ppl``, ``{split}/acc``, ``{split}/nll`` for every split with at least one target
      token on some process;
    * ``mia/{score}_auc`` and ``mia/{score}_tpr_at_5_fpr`` for ``score`` in ``loss``, ``zlib``,
      ``min_k``, ``min_k_plus_plus`` when both the member split (forget) and the non-member split
      (approximate) have documents. Members are the positives. ``zlib`` is NaN when batches lack
      ``zlib_len``.

    Under DDP every rank must call ``compute()``: every metric of every split is synchronised, also
    on ranks that never saw that split, so no rank waits on a collective the others skip; the keys
    returned are the same on every rank.

    Args:
        splits: names of the evaluation splits.
        k: fraction of lowest tokens for Min-K% and Min-K%++ (papers: 0.2).
        members: the split whose documents the model was trained on (positives).
        non_members: the split of unseen in-distribution documents (negatives).
        fpr: false-positive rate at which the true-positive rate is reported.
    """

    def __init__(
        self,
        splits: tuple[str, ...] = EVAL_SPLITS,
        *,
        k: float = 0.2,
        members: str = "forget",
        non_members: str = "approximate",
        fpr: float = 0.05,
    ) -> None:
        super().__init__()
        self.splits = tuple(splits)
        if not self.splits:
            raise ValueError("UnlearningEvaluator needs at least one split name")
        self.members, self.non_members, self.fpr = members, non_members, float(fpr)
        self.perplexity = nn.ModuleDict({s: SplitPerplexity() for s in self.splits})
        self.membership = nn.ModuleDict(
            {s: MembershipScores(k=k) for s in (members, non_members) if s in self.splits}
        )
        self._tpr_key = f"tpr_at_{self.fpr * 100:g}_fpr"

    def _check_split(self, split: str) -> None:
        if split not in self.perplexity:
            raise KeyError(f"unknown evaluation split {split!r}; expected one of {self.splits}")

    def update(self, split: str, stats: dict[str, Tensor], batch: dict | None = None) -> None:
        """Add one batch of split ``split``; ``batch["zlib_len"]`` feeds the zlib score."""
        self._check_split(split)
        self.perplexity[split].update(stats)
        if split in self.membership:
            zlib_len = batch.get("zlib_len") if isinstance(batch, dict) else None
            self.membership[split].update(stats, zlib_len)

    def compute(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r".*was called before the ``update`` method.*"
            )
            for split, metric in self.perplexity.items():
                values = metric.compute()  # every rank, every split: it synchronises
                if int(values.pop("tokens")) > 0:
                    out.update({f"{split}/{key}": value for key, value in values.items()})
            scores = {split: metric.compute() for split, metric in self.membership.items()}
        if self.members in scores and self.non_members in scores:
            pos, neg = scores[self.members], scores[self.non_members]
            if pos["loss"].numel() and neg["loss"].numel():
                for name in MIA_SCORES:
                    out[f"mia/{name}_auc"] = torch.tensor(roc_auc(pos[name], neg[name]))
                    out[f"mia/{name}_{self._tpr_key}"] = torch.tensor(
                        tpr_at_fpr(pos[name], neg[name], self.fpr)
                    )
        return out

    def reset(self) -> None:
        for metric in [*self.perplexity.values(), *self.membership.values()]:
            metric.reset()
