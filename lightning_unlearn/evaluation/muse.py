"""MUSE's knowledge-memorisation and privacy-leakage metrics (Shi et al. 2024, "MUSE: Machine
Unlearning Six-Way Evaluation for Language Models", arXiv:2407.06460, criteria C2 and C3; VerbMem
is :class:`~lightning_unlearn.evaluation.memorisation.VerbatimMemorisation`).

KnowMem asks questions about the forget content and about the retain content and compares the
model's greedy answers with the reference answers (the retain figure is MUSE's utility). By default
as MUSE's ``metrics/knowmem.py`` and ``metrics/logger.py`` (swj0419/muse_bench): a plain-text
few-shot prompt ``"Question: {q}\nAnswer: {a}\n\n"`` per in-context example (MUSE's
``forget_qa_icl`` / ``retain_qa_icl``) then ``"Question: {q}\nAnswer: "``, tokenised with the
tokenizer's special tokens, at most 32 greedy tokens, the answer cut before the first ``"\n\n"``,
``"\nQuestion"`` or ``"Question:"`` (:func:`cut_answer`), scored by ROUGE-L **F1** on words
without a stemmer (MUSE's ``mean_rougeL``; open-unlearning's ``rouge_type: rougeL_f1``). Options:
``rouge="recall"`` (this library's headline before 0.2.0) and ``prompt="chat"`` (the question alone
through the tokenizer's chat template, as the QA data module trains, nothing cut).

PrivLeak compares how well the Min-K% Prob attack (k = 40%) separates the forget set from a
holdout set under the unlearned model and under a model retrained without the forget set:
``(AUC_unlearned - AUC_retrain) / AUC_retrain * 100``. Near 0 is ideal; strongly negative means
the forget set still leaks (MUSE's AUC counts the holdout as positives, so a model that remembers
the forget set scores near 0 and PrivLeak near -100); positive means over-unlearning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from ..data.sources import DataSource
from .base import GenerationMetric, MetricResult, ModelMetric, SplitTexts
from .benchmarks_math import MUSE_RETRAIN_AUC, privleak
from .documents import SplitDocuments, padded
from .generation import greedy_generate
from .mia import min_k_score, roc_auc
from .qa import generate_answers, load_qa
from .rouge import rouge_l

__all__ = ["KnowMem", "PrivLeak", "min_k_auc_muse", "cut_answer", "MUSE_STOP_WORDS"]

MUSE_STOP_WORDS = ("\n\n", "\nQuestion", "Question:")
"""Where MUSE's KnowMem cuts a generated answer (``metrics/knowmem.py``, ``eval``)."""


def cut_answer(text: str, stop_words: Sequence[str] = MUSE_STOP_WORDS) -> str:
    """The answer before the first stop word, each stop word cut in turn as MUSE's
    ``get_prefix_before_words_occur`` (nothing stripped)."""
    for word in stop_words:
        text = text.split(word)[0]
    return text


def muse_prompt(question: str, examples: Sequence[tuple[str, str]] = ()) -> str:
    """MUSE's KnowMem prompt: the few-shot examples, then the question (``metrics/knowmem.py``)."""
    shots = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in examples)
    return shots + f"Question: {question}\nAnswer: "


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
    retrain model's report, or ``"news"`` / ``"books"``: MUSE's own constants 0.4772 / 0.5393,
    :data:`~lightning_unlearn.evaluation.benchmarks_math.MUSE_RETRAIN_AUC`, what MUSE's
    ``eval.py`` divides by: use them on MUSE's data), else 0.5: right when the holdout is matched
    to the forget set so a model that never saw either cannot tell them apart (the demo's
    approximate split). The verdict says which, with the number.

    Args:
        model_name_or_path: the retrain model (``None``: see above).
        retrain_auc: the retrained model's AUC in MUSE's convention when no model is given: a
            number, or ``"news"`` / ``"books"`` for MUSE's constants.
        k: Min-K% fraction (MUSE: 0.4).
        forget: the forget split.
        holdout: the holdout split (documents of the same kind the model never saw).
    """

    prefix = "privleak"

    def __init__(
        self,
        model_name_or_path: str | None = None,
        *,
        retrain_auc: float | str | None = None,
        k: float = 0.4,
        forget: str = "forget",
        holdout: str = "approximate",
    ) -> None:
        super().__init__(model_name_or_path)
        self.corpus = None
        if isinstance(retrain_auc, str):
            if retrain_auc not in MUSE_RETRAIN_AUC:
                raise ValueError(
                    f"retrain_auc must be a number or one of MUSE's corpora "
                    f"{sorted(MUSE_RETRAIN_AUC)}, got {retrain_auc!r}"
                )
            self.corpus, retrain_auc = retrain_auc, MUSE_RETRAIN_AUC[retrain_auc]
        if retrain_auc is not None and not 0.0 < retrain_auc <= 1.0:
            raise ValueError(f"retrain_auc must be in (0, 1], got {retrain_auc}")
        self.retrain_auc, self.k = retrain_auc, float(k)
        self.forget, self.holdout = forget, holdout
        self.splits = (forget, holdout)

    def source(self) -> str:
        if self.model_name_or_path is not None:
            return f"retrain model {self.model_name_or_path}"
        if self.corpus is not None:
            return f"MUSE's retrain AUC for {self.corpus.capitalize()} (constants.py)"
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
    """MUSE KnowMem (see the module docstring): ``knowmem/{forget,retain}_rouge_l_f1`` and
    ``_recall``, the headline the one ``rouge`` names; per question the headline
    (``documents["knowmem_forget"]``...).

    Args:
        forget_qa: questions about the forget content (MUSE ``knowmem`` ``forget_qa``; a path or
            ``{hf_name: muse-bench/MUSE-News, hf_config: knowmem, split: forget_qa}``).
        retain_qa: questions about the retain content (``retain_qa``).
        forget_icl: the in-context examples of the forget prompts (MUSE ``forget_qa_icl``);
            ``None``: none (zero-shot, MUSE's format).
        retain_icl: the in-context examples of the retain prompts (``retain_qa_icl``).
        rouge: the headline: ``"f1"`` (MUSE, open-unlearning) or ``"recall"``.
        prompt: ``"muse"`` (MUSE's plain-text few-shot prompt, answers cut at
            :data:`MUSE_STOP_WORDS`) or ``"chat"`` (the question alone through the chat template,
            no examples, nothing cut: this library's form before 0.2.0).
        max_new_tokens: most tokens of an answer (MUSE: 32).
        max_length: tokens of a question (with ``prompt="chat"``).
        batch_size: questions answered together.
    """

    prefix = "knowmem"

    def __init__(
        self,
        *,
        forget_qa: str | DataSource,
        retain_qa: str | DataSource | None = None,
        forget_icl: str | DataSource | None = None,
        retain_icl: str | DataSource | None = None,
        rouge: str = "f1",
        prompt: str = "muse",
        max_new_tokens: int = 32,
        max_length: int = 512,
        batch_size: int = 8,
    ) -> None:
        if rouge not in ("f1", "recall"):
            raise ValueError(f"rouge must be 'f1' (MUSE) or 'recall', got {rouge!r}")
        if prompt not in ("muse", "chat"):
            raise ValueError(
                f"prompt must be 'muse' (MUSE's few-shot text) or 'chat', got {prompt!r}"
            )
        if prompt == "chat" and (forget_icl is not None or retain_icl is not None):
            raise ValueError("in-context examples (forget_icl, retain_icl) need prompt='muse'")
        self.forget_qa, self.retain_qa = forget_qa, retain_qa
        self.forget_icl, self.retain_icl = forget_icl, retain_icl
        self.rouge, self.prompt = rouge, prompt
        self.max_new_tokens, self.max_length = int(max_new_tokens), int(max_length)
        self.batch_size = int(batch_size)

    def describe(self):
        return {k: (str(v) if v is not None else None) for k, v in super().describe().items()}

    def answers(self, model, tokenizer, questions: Sequence[str], icl) -> list[str]:
        """The model's answers to ``questions`` in the configured prompt form."""
        if self.prompt == "chat":
            return generate_answers(
                model,
                tokenizer,
                questions,
                max_new_tokens=self.max_new_tokens,
                max_length=self.max_length,
                batch_size=self.batch_size,
            )
        examples = [(r.question, r.answer) for r in icl] if icl else []
        prompts = [tokenizer(muse_prompt(q, examples)).input_ids for q in questions]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        generated = greedy_generate(
            model,
            prompts,
            max_new_tokens=self.max_new_tokens,
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
            batch_size=self.batch_size,
        )
        texts = tokenizer.batch_decode(
            generated, skip_special_tokens=True, clean_up_tokenization_spaces=True
        )
        return [cut_answer(t) for t in texts]

    def compute(self, model, tokenizer, texts: Mapping[str, SplitTexts]) -> MetricResult:
        result = MetricResult()
        for name in ("forget", "retain"):
            source = getattr(self, f"{name}_qa")
            if source is None:
                continue
            records = load_qa(source, role=f"KnowMem {name}")
            icl_source = getattr(self, f"{name}_icl")
            icl = load_qa(icl_source, role=f"KnowMem {name} examples") if icl_source else None
            answers = self.answers(model, tokenizer, [r.question for r in records], icl)
            scores = rouge_l(answers, [r.answer for r in records])
            for kind in ("recall", "f1"):
                result.values[f"knowmem/{name}_rouge_l_{kind}"] = sum(scores[kind]) / len(records)
            result.documents[f"knowmem_{name}"] = {
                "doc_index": list(range(len(records))),
                f"knowmem/rouge_l_{self.rouge}": scores[self.rouge],
            }
        return result

    def label(self, key: str) -> str | None:
        suffix = f"_rouge_l_{self.rouge}"
        if key.endswith(suffix):
            name = key.removeprefix("knowmem/").removesuffix(suffix)
            kind = "F1, as MUSE" if self.rouge == "f1" else "recall"
            shots = (
                "chat prompt"
                if self.prompt == "chat"
                else ("few-shot" if getattr(self, f"{name}_icl", None) else "zero-shot")
                + " MUSE prompt"
            )
            return f"KnowMem {name} (ROUGE-L {kind}, {shots})"
        return None
