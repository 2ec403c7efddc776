"""Two more membership-inference attacks, each AUC with a bootstrap interval over documents.

* :class:`ReferenceMembership` -- the reference-model attack (Carlini et al. 2021, "Extracting
  Training Data from Large Language Models", the "comparing to other neural language models"
  score; Mireshghallah et al. 2022, "likelihood ratio" attacks): the document's NLL under the
  evaluated model minus its NLL under a reference model that never saw the forget set. A
  document the evaluated model fits better than the reference does is called a member. In the
  demo the reference is the untouched pre-trained model; elsewhere give ``model_name_or_path``
  (``--mia_reference``); without it the attack is skipped.
* :class:`GradientNormMembership` -- the gradient-norm attack: training documents sit near a
  minimum of the loss, so the loss gradient on them is small. The gradient taken is that of the
  document's mean NLL with respect to the output projection (``lm_head``), computed in closed
  form from the last hidden states of the evaluation pass (``||H^T (P - Y)||_F / n`` for the
  document's ``n`` target positions): one exact backward through the output layer per document,
  with no second forward pass through the network. The gradient with respect to every weight
  would cost a full backward per document (three forward passes' worth); the output layer's is
  the common cheap variant (see e.g. Maini et al. 2024, "LLM Dataset Inference", which uses
  per-layer gradient norms as features). Under DeepSpeed ZeRO-3 the output projection is
  sharded and the attack is skipped.

Scores follow the library's convention (higher: more likely a member); members are the forget
split, non-members the approximate split.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from .base import MetricResult, ModelMetric, TokenMetric
from .documents import SplitDocuments
from .mia import add_auc, auc_verdicts

__all__ = ["ReferenceMembership", "GradientNormMembership", "head_gradient_norm"]


def head_gradient_norm(hidden: Tensor, weight: Tensor, targets: Tensor) -> float:
    """``||d mean NLL / d W||_F`` for the output projection ``W`` (``[vocab, hidden]``) of one
    document with last hidden states ``hidden`` (``[n, hidden]``) predicting ``targets`` (``[n]``).

    ``d NLL_t / d W = (p_t - e_{y_t}) h_t^T``, so the gradient of the mean is
    ``G^T H / n`` with ``G = P - Y``; its squared norm is ``sum((G G^T) * (H H^T)) / n^2`` (the
    Gram form: ``n x n`` products instead of a ``vocab x hidden`` matrix).
    """
    h = hidden.double()
    probs = torch.softmax(h @ weight.double().T, dim=-1)
    probs[torch.arange(len(targets)), targets] -= 1.0
    squared = ((probs @ probs.T) * (h @ h.T)).sum().clamp_min(0.0)
    return float(squared.sqrt()) / max(1, len(targets))


class ReferenceMembership(ModelMetric):
    """The reference-model attack (see the module docstring): ``mia_ref/reference_auc`` and its
    interval; per document the score ``mean log p_model - mean log p_reference``.

    Args:
        model_name_or_path: the reference model (never saw the forget set); ``None`` skips.
        members: the member split (positives).
        non_members: the non-member split (negatives).
        confidence: coverage of the bootstrap interval (``None``: no interval).
    """

    prefix = "mia_ref"

    def __init__(
        self,
        model_name_or_path: str | None = None,
        *,
        members: str = "forget",
        non_members: str = "approximate",
        confidence: float | None = 0.95,
    ) -> None:
        super().__init__(model_name_or_path)
        self.members, self.non_members, self.confidence = members, non_members, confidence
        self.splits = (members, non_members)

    @staticmethod
    def scores(docs: SplitDocuments, reference: SplitDocuments) -> Tensor:
        if docs.doc_index != reference.doc_index:
            raise ValueError(
                f"split {docs.split!r}: the reference model was scored on other documents"
            )
        mine = torch.tensor([float(t.double().mean()) for t in docs.logprob])
        theirs = torch.tensor([float(t.double().mean()) for t in reference.logprob])
        return mine - theirs

    def compute(
        self, documents: Mapping[str, SplitDocuments], other: Mapping[str, SplitDocuments] | None
    ) -> MetricResult:
        result = MetricResult()
        splits = (self.members, self.non_members)
        if other is None or not all(s in documents and s in other for s in splits):
            return result  # no reference model: the attack is skipped
        scores = {s: self.scores(documents[s], other[s]) for s in splits}
        for split, values in scores.items():
            result.documents[split] = {"mia_ref/reference": values.tolist()}
        add_auc(result, "mia_ref/reference", scores[self.members], scores[self.non_members],
                self.confidence)  # fmt: skip
        return result

    def label(self, key: str) -> str | None:
        return "MIA AUC reference" if key == "mia_ref/reference_auc" else None

    def verdict(self, report) -> list[str]:
        return auc_verdicts(report.get("after") or {}, ["mia_ref/reference"])


class GradientNormMembership(TokenMetric):
    """The gradient-norm attack (see the module docstring): ``mia_grad/gradient_norm_auc`` and its
    interval; per document the score ``-||grad||`` of the output projection.

    Args:
        members: the member split (positives).
        non_members: the non-member split (negatives).
        confidence: coverage of the bootstrap interval (``None``: no interval).
    """

    prefix = "mia_grad"

    def __init__(
        self,
        *,
        members: str = "forget",
        non_members: str = "approximate",
        confidence: float | None = 0.95,
    ) -> None:
        self.members, self.non_members, self.confidence = members, non_members, confidence
        self.hidden_splits = (members, non_members)

    @staticmethod
    def scores(docs: SplitDocuments) -> Tensor:
        """``-||grad||`` per document (NaN without hidden states, e.g. under ZeRO-3)."""
        weight = docs.output_weight
        if weight is None or weight.numel() == 0 or not docs.hidden:
            return torch.full((len(docs),), math.nan)
        return torch.tensor(
            [-head_gradient_norm(h, weight, t) for h, t in zip(docs.hidden, docs.targets)]
        )

    def compute(self, documents: Mapping[str, SplitDocuments]) -> MetricResult:
        result = MetricResult()
        splits = (self.members, self.non_members)
        if not all(s in documents and documents[s].hidden for s in splits):
            return result
        scores = {s: self.scores(documents[s]) for s in splits}
        for split, values in scores.items():
            result.documents[split] = {"mia_grad/gradient_norm": values.tolist()}
        add_auc(result, "mia_grad/gradient_norm", scores[self.members],
                scores[self.non_members], self.confidence)  # fmt: skip
        return result

    def label(self, key: str) -> str | None:
        return "MIA AUC gradient norm" if key == "mia_grad/gradient_norm_auc" else None

    def verdict(self, report) -> list[str]:
        return auc_verdicts(report.get("after") or {}, ["mia_grad/gradient_norm"])
