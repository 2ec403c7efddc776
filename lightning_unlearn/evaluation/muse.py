"""MUSE's knowledge-memorisation and privacy-leakage metrics (Shi et al. 2024, "MUSE: Machine
Unlearning Six-Way Evaluation for Language Models", arXiv:2407.06460, criteria C2 and C3; VerbMem
is :class:`~lightning_unlearn.evaluation.memorisation.VerbatimMemorisation`).

KnowMem asks questions about the forget content and about the retain content and compares the
model's greedy answers with the reference answers, ROUGE-L recall on text (the retain figure is
MUSE's utility). MUSE prompts with in-context examples; here the question goes in alone (through
the tokenizer's chat template when it has one, as the QA data module trains).

PrivLeak compares how well the Min-K% Prob attack (k = 40%) separates the forget set from a
holdout set under the unlearned model and under a model retrained without the forget set:
``(AUC_unlearned - AUC_retrain) / AUC_retrain * 100``. Near 0 is ideal; strongly negative means
the forget set still leaks (MUSE's AUC counts the holdout as positives, so a model that remembers
the forget set scores near 0 and PrivLeak near -100); positive means over-unlearning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from ..data.sources import DataSource
from .base import GenerationMetric, MetricResult, ModelMetric, SplitTexts
from .benchmarks_math import privleak
from .documents import SplitDocuments, padded
from .mia import min_k_score, roc_auc
from .qa import generate_answers, load_qa
from .rouge import rouge_l

__all__ = ["KnowMem", "PrivLeak", "min_k_auc_muse"]


def min_k_auc_muse(forget: SplitDocuments, holdout: SplitDocuments, *, k: float = 0.4) -> float:
    """The Min-K% attack's AUC in MUSE's convention (holdout positive): ``1 - AUC`` with the
    forget documents positive (:func:`~lightning_unlearn.evaluation.mia.roc_auc`)."""
    scores = []
    for docs in (forget, holdout):
        logprob, mask = padded(docs.logprob)
        scores.append(min_k_score(logprob, mask, k=k))
    return 1.0 - roc_auc(scores[0], scores[1])


class PrivLeak(ModelMetric):
    """MUSE PrivLeak (see the module docstring): ``privleak/privleak``, and the two AUCs
    ``privleak/auc`` (this model) and ``privleak/auc_retrain``.

    The retrained model's AUC comes from, in this order: ``model_name_or_path`` (a retrain model,
    scored on the same documents; ``--retrain_model``), ``retrain_auc`` (a number, e.g. from a
    retrain model's report), else 0.5: right when the holdout is matched to the forget set so a
    model that never saw either cannot tell them apart (the demo's approximate split). The
    verdict says which.

    Args:
        model_name_or_path: the retrain model (``None``: see above).
        retrain_auc: the retrained model's AUC in MUSE's convention when no model is given.
        k: Min-K% fraction (MUSE: 0.4).
        forget: the forget split.
        holdout: the holdout split (documents of the same kind the model never saw).
    """

    prefix = "privleak"

    def __init__(
        self,
        model_name_or_path: str | None = None,
        *,
        retrain_auc: float | None = None,
        k: float = 0.4,
        forget: str = "forget",
        holdout: str = "approximate",
    ) -> None:
        super().__init__(model_name_or_path)
        if retrain_auc is not None and not 0.0 < retrain_auc <= 1.0:
            raise ValueError(f"retrain_auc must be in (0, 1], got {retrain_auc}")
        self.retrain_auc, self.k = retrain_auc, float(k)
        self.forget, self.holdout = forget, holdout
        self.splits = (forget, holdout)

    def source(self) -> str:
        if self.model_name_or_path is not None:
            return f"retrain model {self.model_name_or_path}"
        if self.retrain_auc is not None:
            return "the retrain AUC given"
        return "0.5: the holdout is matched to the forget set (no retrain model given)"

    def compute(
        self,
        documents: Mapping[str, SplitDocuments],
        other: Mapping[str, SplitDocuments] | None,
    ) -> MetricResult:
        result = MetricResult()
        if self.forget not in documents or self.holdout not in documents:
            return result
        auc = min_k_auc_muse(documents[self.forget], documents[self.holdout], k=self.k)
        if other is not None and self.forget in other and self.holdout in other:
            reference = min_k_auc_muse(other[self.forget], other[self.holdout], k=self.k)
        elif self.retrain_auc is not None:
            reference = float(self.retrain_auc)
        else:
            reference = 0.5
        result.values["privleak/auc"] = auc
        result.values["privleak/auc_retrain"] = reference
        leak = privleak(auc, reference) if reference else math.nan
        result.values["privleak/privleak"] = leak
        return result

    def label(self, key: str) -> str | None:
        return "PrivLeak (%, MUSE; 0 is ideal)" if key == "privleak/privleak" else None

    def verdict(self, report) -> list[str]:
        after = report.get("after") or {}
        leak, auc, ref = (after.get(f"privleak/{k}") for k in ("privleak", "auc", "auc_retrain"))
        if leak is None or auc is None or ref is None:
            return []
        return [
            f"PrivLeak {leak:+.1f}% (Min-K% 40 AUC {auc:.3f}, holdout positive, against "
            f"{ref:.3f} from {self.source()})"
        ]


class KnowMem(GenerationMetric):
    """MUSE KnowMem (see the module docstring): ``knowmem/{forget,retain}_rouge_l_recall`` (and
    ``_f1``), per question its recall (``documents["knowmem_forget"]``...).

    Args:
        forget_qa: questions about the forget content (MUSE ``knowmem`` ``forget_qa``; a path or
            ``{hf_name: muse-bench/MUSE-News, hf_config: knowmem, split: forget_qa}``).
        retain_qa: questions about the retain content (``retain_qa``).
        max_new_tokens: most tokens of an answer (MUSE: 32).
        max_length: tokens of a question.
        batch_size: questions answered together.
    """

    prefix = "knowmem"

    def __init__(
        self,
        *,
        forget_qa: str | DataSource,
        retain_qa: str | DataSource | None = None,
        max_new_tokens: int = 32,
        max_length: int = 512,
        batch_size: int = 8,
    ) -> None:
        self.forget_qa, self.retain_qa = forget_qa, retain_qa
        self.max_new_tokens, self.max_length = int(max_new_tokens), int(max_length)
        self.batch_size = int(batch_size)

    def describe(self):
        return {k: (str(v) if v is not None else None) for k, v in super().describe().items()}

    def compute(self, model, tokenizer, texts: Mapping[str, SplitTexts]) -> MetricResult:
        result = MetricResult()
        for name in ("forget", "retain"):
            source = getattr(self, f"{name}_qa")
            if source is None:
                continue
            records = load_qa(source, role=f"KnowMem {name}")
            answers = generate_answers(
                model, tokenizer, [r.question for r in records],
                max_new_tokens=self.max_new_tokens, max_length=self.max_length,
                batch_size=self.batch_size,
            )  # fmt: skip
            scores = rouge_l(answers, [r.answer for r in records])
            for kind in ("recall", "f1"):
                result.values[f"knowmem/{name}_rouge_l_{kind}"] = sum(scores[kind]) / len(records)
            result.documents[f"knowmem_{name}"] = {
                "doc_index": list(range(len(records))),
                "knowmem/rouge_l_recall": scores["recall"],
            }
        return result

    def label(self, key: str) -> str | None:
        if key.endswith("_rouge_l_recall"):
            name = key.removeprefix("knowmem/").removesuffix("_rouge_l_recall")
            return f"KnowMem {name} (ROUGE-L recall on text)"
        return None
