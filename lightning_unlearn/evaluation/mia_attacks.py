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
* :class:`ParameterGradientNormMembership` -- open-unlearning's form of the gradient-norm attack
  (``src/evals/metrics/mia/gradnorm.py``, the TOFU / MUSE numbers it reports): the model in
  *train* mode, one full backward per document of its mean NLL (its last target left out, as
  open-unlearning's ``tokenwise_logprobs``), the score the mean over parameters of each
  parameter's gradient ``p``-norm. Costly (a forward and backward per document); an option in the
  TOFU / MUSE configs. Tested against open-unlearning's output
  (``tests/fixtures/references/open_unlearning_gradnorm.json``).

Scores follow the library's convention (higher: more likely a member); members are the forget
split, non-members the approximate split.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from .base import GenerationMetric, MetricResult, ModelMetric, SplitTexts, TokenMetric
from .documents import SplitDocuments
from .mia import add_auc, auc_verdicts

__all__ = [
    "ReferenceMembership",
    "GradientNormMembership",
    "ParameterGradientNormMembership",
    "head_gradient_norm",
    "parameter_gradient_norm",
]


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


def membership_result(
    key: str,
    scores: Mapping[str, Tensor],
    attack: ReferenceMembership | GradientNormMembership | ParameterGradientNormMembership,
) -> MetricResult:
    """An attack's result from its per-document ``scores`` of each split: the scores under
    ``key`` per document, ``{key}_auc`` (``attack.members`` positive, ``attack.non_members``
    negative) and, with ``attack.confidence``, its bootstrap interval."""
    result = MetricResult()
    for split, values in scores.items():
        result.documents[split] = {key: values.tolist()}
    add_auc(result, key, scores[attack.members], scores[attack.non_members], attack.confidence)
    return result


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
        splits = (self.members, self.non_members)
        if other is None or not all(s in documents and s in other for s in splits):
            return MetricResult()  # no reference model: the attack is skipped
        scores = {s: self.scores(documents[s], other[s]) for s in splits}
        return membership_result("mia_ref/reference", scores, self)

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
        splits = (self.members, self.non_members)
        if not all(s in documents and documents[s].hidden for s in splits):
            return MetricResult()
        scores = {s: self.scores(documents[s]) for s in splits}
        return membership_result("mia_grad/gradient_norm", scores, self)

    def label(self, key: str) -> str | None:
        if key == "mia_grad/gradient_norm_auc":
            return "MIA AUC gradient norm (output layer, eval mode)"
        return None

    def verdict(self, report) -> list[str]:
        scope = {"mia_grad/gradient_norm": "output layer, eval mode"}
        return auc_verdicts(report.get("after") or {}, ["mia_grad/gradient_norm"], scope)


def parameter_gradient_norm(model: torch.nn.Module, input_ids: Tensor, *, p: float = 2) -> float:
    """open-unlearning's gradient norm of one document: the mean over parameters (those that get
    a gradient) of ``||d loss / d parameter||_p``, ``loss`` the mean NLL of the document's target
    tokens (every token after the first) but the last, the model in train mode.

    The model's train/eval mode is restored and its gradients are zeroed afterwards.

    Args:
        model: a causal LM whose forward takes ``input_ids`` / ``attention_mask`` and returns
            ``logits``.
        input_ids: ``[tokens]`` of the document (at least 3).
        p: the norm (open-unlearning: 1, 2 or inf; its configs use 2).
    """
    if input_ids.numel() < 3:
        raise ValueError(
            f"a document needs at least 3 tokens (a context, a scored target and the dropped "
            f"last one), got {input_ids.numel()}"
        )
    was_training = model.training
    device = next(model.parameters()).device
    ids = input_ids.reshape(1, -1).to(device)
    try:
        model.train()
        model.zero_grad(set_to_none=True)
        with torch.inference_mode(False), torch.enable_grad():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
            logprob = torch.log_softmax(logits[0, :-2], dim=-1)
            loss = -logprob.gather(-1, ids[0, 1:-1, None]).mean()
            loss.backward()
        norms = [q.grad.detach().norm(p=p) for q in model.parameters() if q.grad is not None]
        return float(torch.stack(norms).mean())
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)


class ParameterGradientNormMembership(GenerationMetric):
    """open-unlearning's gradient-norm attack (see the module docstring):
    ``mia_grad_all/gradient_norm_auc`` and its interval; per document the score ``-norm``.

    Each document's first window (as the data module tokenised it) is scored. The model runs in
    train mode, as open-unlearning's (dropout, if any, is active).

    Args:
        members: the member split (positives).
        non_members: the non-member split (negatives).
        p: the gradient norm (open-unlearning: 2).
        confidence: coverage of the bootstrap interval (``None``: no interval).
    """

    prefix = "mia_grad_all"

    def __init__(
        self,
        *,
        members: str = "forget",
        non_members: str = "approximate",
        p: float = 2,
        confidence: float | None = 0.95,
    ) -> None:
        if p not in (1, 2, math.inf):
            raise ValueError(f"p must be 1, 2 or inf (open-unlearning's choices), got {p}")
        self.members, self.non_members, self.p = members, non_members, p
        self.confidence = confidence
        self.splits = (members, non_members)

    def compute(self, model, tokenizer, texts: Mapping[str, SplitTexts]) -> MetricResult:
        if not all(s in texts for s in self.splits):
            return MetricResult()
        scores = {}
        for split in self.splits:
            scores[split] = torch.tensor(
                [
                    -parameter_gradient_norm(model, torch.as_tensor(ids), p=self.p)
                    if len(ids) >= 3
                    else math.nan
                    for ids in texts[split].input_ids
                ],
                dtype=torch.float64,
            )
        return membership_result("mia_grad_all/gradient_norm", scores, self)

    def label(self, key: str) -> str | None:
        if key == "mia_grad_all/gradient_norm_auc":
            return "MIA AUC gradient norm (all parameters, train mode, open-unlearning)"
        return None

    def verdict(self, report) -> list[str]:
        scope = {"mia_grad_all/gradient_norm": f"all parameters, train mode, p = {self.p:g}"}
        return auc_verdicts(report.get("after") or {}, ["mia_grad_all/gradient_norm"], scope)
