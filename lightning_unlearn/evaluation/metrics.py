"""Evaluation metrics as torchmetrics ``Metric``s, so they reduce correctly across ranks."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torchmetrics import Metric

EVAL_SPLITS = ("forget", "approximate", "retain", "general")


class SplitPerplexity(Metric):
    """Token-level perplexity and next-token accuracy of one split.

    Perplexity is ``exp(sum NLL / number of target tokens)`` over the whole split (not a mean of
    per-batch perplexities), so it is independent of batching and of the number of processes.
    """

    full_state_update = False
    higher_is_better = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("nll_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("tokens", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("correct", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, stats: dict[str, Tensor]) -> None:
        """``stats`` is the output of :func:`lightning_unlearn.losses.token_statistics`."""
        mask = stats["mask"]
        self.nll_sum += (-stats["logprob"] * mask).sum().double()
        self.tokens += mask.sum()
        self.correct += stats["correct"].sum()

    def compute(self) -> dict[str, Tensor]:
        if self.tokens == 0:
            nan = torch.tensor(math.nan)
            return {"ppl": nan, "acc": nan, "nll": nan}
        nll = self.nll_sum / self.tokens
        return {
            "ppl": torch.exp(nll).float(),
            "acc": (self.correct.double() / self.tokens).float(),
            "nll": nll.float(),
        }


class UnlearningEvaluator(nn.Module):
    """All evaluation metrics of a run, keyed by split.

    ``update(split, stats, batch)`` is fed from one forward pass per chunk;
    ``compute()`` returns a flat dict such as ``{"forget/ppl": ..., "approximate/acc": ...}``.
    """

    def __init__(self, splits: tuple[str, ...] = EVAL_SPLITS) -> None:
        super().__init__()
        self.splits = tuple(splits)
        self.perplexity = nn.ModuleDict({s: SplitPerplexity() for s in self.splits})

    def _check_split(self, split: str) -> None:
        if split not in self.perplexity:
            raise KeyError(f"unknown evaluation split {split!r}; expected one of {self.splits}")

    def update(self, split: str, stats: dict[str, Tensor], batch: dict | None = None) -> None:
        self._check_split(split)
        self.perplexity[split].update(stats)

    def compute(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for split, metric in self.perplexity.items():
            if metric.update_called:
                for key, value in metric.compute().items():
                    out[f"{split}/{key}"] = value
        return out

    def reset(self) -> None:
        for metric in self.perplexity.values():
            metric.reset()
