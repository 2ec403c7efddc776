"""TOFU's forget quality and model utility (Maini et al. 2024, "TOFU: A Task of Fictitious
Unlearning for LLMs", arXiv:2401.06121), on TOFU-format question-answer files.

* **Truth ratio** of a question: ``R = (geometric mean over perturbed answers of
  P(a_hat|q)^(1/|a_hat|)) / P(a_tilde|q)^(1/|a_tilde|)`` with ``a_tilde`` the paraphrased answer
  (the answer itself where a set has no paraphrase: real authors, world facts).
* **Forget quality**: the two-sample Kolmogorov-Smirnov p-value (scipy) between the evaluated
  model's truth ratios on the forget questions and a retain model's (trained without the forget
  set) on the same questions: from ``retain_model`` (scored here) or ``retain_truth_ratios`` (a
  JSON list saved from such a model). High (near 1) means indistinguishable from never trained.
* **Model utility**: the harmonic mean of nine numbers, {retain, real authors, world facts} x
  {answer probability, ROUGE-L recall of the model's greedy answer, truth-ratio score}; the
  answer probability is ``P(a|q)^(1/|a|)`` on retain and normalised over the answer and its
  perturbations on real authors and world facts; the truth-ratio score is
  ``mean(max(0, 1 - R))``. With fewer sets given, the harmonic mean of what was computed (the
  verdict says which).

ROUGE is on text (torchmetrics' ROUGE-L, word level, with TOFU's Porter stemmer from ``nltk``, a
dependency), so figures compare with TOFU's; without ``nltk`` the metric refuses to start rather
than score unstemmed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..data.sources import DataSource, QARecord
from .base import GenerationMetric, MetricResult, SplitTexts
from .benchmarks_math import (
    forget_truth_ratio_score,
    normalised_answer_probability,
    tofu_forget_quality,
    tofu_model_utility,
    truth_ratio,
    truth_ratio_score,
)
from .qa import answer_logprob_means, generate_answers, load_qa
from .rouge import rouge_l

__all__ = ["TOFU", "tofu_truth_ratios"]

Source = str | DataSource


_FORGET_FORMS = {
    "symmetric": forget_truth_ratio_score,  # TOFU aggregate_eval_stat.py, open-unlearning
    "mean": lambda ratios: float(torch.nanmean(torch.as_tensor(ratios))),
}


def _require_stemmer() -> None:
    """TOFU's ROUGE-L stems words (``use_stemmer=True``): refuse to score another form."""
    try:
        import nltk  # noqa: F401
    except ImportError as error:
        raise ModuleNotFoundError(
            "TOFU's ROUGE-L recall stems words with nltk's Porter stemmer (locuslab/tofu "
            "eval_rouge_recall: use_stemmer=True); nltk is not installed: pip install 'nltk>=3.8,<4'"
        ) from error


def _alternatives(records: Sequence[QARecord]) -> tuple[list[str], list[list[str]]]:
    """Per record the correct answer to compare with (the paraphrase where there is one) and the
    perturbed (wrong) answers."""
    correct = [str(r.extras.get("paraphrased_answer") or r.answer) for r in records]
    perturbed = []
    for r in records:
        values = r.extras.get("perturbed_answer") or []
        perturbed.append([values] if isinstance(values, str) else [str(v) for v in values])
    if not any(perturbed):
        raise ValueError(
            "TOFU truth ratios need perturbed answers: the records have no 'perturbed_answer' "
            "(use the *_perturbed files: forget10_perturbed, retain_perturbed, ...)"
        )
    return correct, perturbed


def tofu_truth_ratios(model, tokenizer, records: Sequence[QARecord], **kw: Any) -> torch.Tensor:
    """``R`` of every record (see the module docstring)."""
    correct, perturbed = _alternatives(records)
    width = max(len(p) for p in perturbed)
    pairs = [(r.question, a) for r, alts in zip(records, perturbed) for a in alts]
    flat = answer_logprob_means(model, tokenizer, pairs, **kw)
    table = torch.full((len(records), width), math.nan, dtype=torch.float64)
    k = 0
    for i, alts in enumerate(perturbed):
        table[i, : len(alts)] = flat[k : k + len(alts)]
        k += len(alts)
    para = answer_logprob_means(
        model, tokenizer, [(r.question, c) for r, c in zip(records, correct)], **kw
    )
    return truth_ratio(table, para)


class TOFU(GenerationMetric):
    """TOFU's forget quality and model utility (see the module docstring).

    Values: ``tofu/forget_quality``, ``tofu/model_utility``, ``tofu/forget_truth_ratio`` (on the
    forget questions, in the form ``forget_truth_ratio`` names), and the nine ``tofu/{retain,real_authors,world_facts}_{probability,
    rouge_l_recall,truth_ratio_score}``; per forget question its truth ratio
    (``documents["tofu_forget"]``).

    Args:
        forget: the forget questions with paraphrased and perturbed answers (TOFU
            ``forget10_perturbed``); a path, or ``{hf_name: locuslab/TOFU, hf_config:
            forget10_perturbed, split: train}``.
        retain: TOFU ``retain_perturbed``.
        real_authors: TOFU ``real_authors_perturbed``.
        world_facts: TOFU ``world_facts_perturbed``.
        retain_model: a model trained without the forget set (TOFU's ``retain90`` model): its
            truth ratios on the forget questions are forget quality's reference.
        retain_truth_ratios: a JSON file with those truth ratios (a list), instead.
        max_length: tokens of a question and answer.
        max_new_tokens: most tokens of a generated answer (TOFU: 200).
        batch_size: sequences per forward.
        forget_truth_ratio: how ``tofu/forget_truth_ratio`` aggregates the forget questions'
            ratios: ``"symmetric"`` (default), TOFU's and open-unlearning's ``mean(min(R, 1/R))``;
            ``"mean"``, ``mean(R)`` (this library's form before 0.2.0; 0.651 where TOFU's gives
            0.449 on random data).
    """

    prefix = "tofu"

    def __init__(
        self,
        *,
        forget: Source,
        retain: Source | None = None,
        real_authors: Source | None = None,
        world_facts: Source | None = None,
        retain_model: str | None = None,
        retain_truth_ratios: str | None = None,
        max_length: int = 512,
        max_new_tokens: int = 200,
        batch_size: int = 8,
        forget_truth_ratio: str = "symmetric",
    ) -> None:
        if forget_truth_ratio not in _FORGET_FORMS:
            raise ValueError(
                f"forget_truth_ratio must be one of {sorted(_FORGET_FORMS)}, got "
                f"{forget_truth_ratio!r}"
            )
        _require_stemmer()
        self.forget_truth_ratio = forget_truth_ratio
        self.forget, self.retain = forget, retain
        self.real_authors, self.world_facts = real_authors, world_facts
        self.retain_model, self.retain_truth_ratios = retain_model, retain_truth_ratios
        self.max_length, self.max_new_tokens = int(max_length), int(max_new_tokens)
        self.batch_size = int(batch_size)
        self._reference: list[float] | None = None

    def describe(self) -> dict[str, Any]:
        return {k: (str(v) if v is not None else None) for k, v in super().describe().items()}

    def _kw(self) -> dict[str, int]:
        return {"max_length": self.max_length, "batch_size": self.batch_size}

    def reference_ratios(self, tokenizer, records: Sequence[QARecord]) -> list[float] | None:
        """The retain model's truth ratios on the forget questions (computed once)."""
        if self._reference is None:
            if self.retain_truth_ratios is not None:
                with open(self.retain_truth_ratios, encoding="utf-8") as fh:
                    self._reference = [float(v) for v in json.load(fh)]
            elif self.retain_model is not None:
                from ..models import load_causal_lm

                model = load_causal_lm(self.retain_model).eval()
                self._reference = tofu_truth_ratios(
                    model, tokenizer, records, **self._kw()
                ).tolist()
        return self._reference

    def compute(self, model, tokenizer, texts: Mapping[str, SplitTexts]) -> MetricResult:
        result = MetricResult()
        forget = load_qa(self.forget, role="TOFU forget")
        ratios = tofu_truth_ratios(model, tokenizer, forget, **self._kw())
        result.values["tofu/forget_truth_ratio"] = _FORGET_FORMS[self.forget_truth_ratio](ratios)
        result.documents["tofu_forget"] = {
            "doc_index": list(range(len(forget))),
            "tofu/truth_ratio": ratios.tolist(),
        }
        reference = self.reference_ratios(tokenizer, forget)
        result.values["tofu/forget_quality"] = (
            tofu_forget_quality(ratios, reference) if reference is not None else math.nan
        )
        parts = []
        for name in ("retain", "real_authors", "world_facts"):
            source = getattr(self, name)
            if source is None:
                continue
            values = self._utility(model, tokenizer, load_qa(source, role=f"TOFU {name}"), name)
            for key, value in values.items():
                result.values[f"tofu/{name}_{key}"] = value
            parts += list(values.values())
        result.values["tofu/model_utility"] = tofu_model_utility(parts) if parts else math.nan
        return result

    def _utility(self, model, tokenizer, records, name: str) -> dict[str, float]:
        correct, perturbed = _alternatives(records)
        answers = answer_logprob_means(
            model, tokenizer, [(r.question, r.answer) for r in records], **self._kw()
        )
        if name == "retain":
            probability = float(answers.exp().mean())
        else:
            width = max(len(p) for p in perturbed)
            table = torch.full((len(records), width), math.nan, dtype=torch.float64)
            pairs = [(r.question, a) for r, alts in zip(records, perturbed) for a in alts]
            flat = answer_logprob_means(model, tokenizer, pairs, **self._kw())
            k = 0
            for i, alts in enumerate(perturbed):
                table[i, : len(alts)] = flat[k : k + len(alts)]
                k += len(alts)
            probability = float(torch.nanmean(normalised_answer_probability(answers, table)))
        generated = generate_answers(
            model,
            tokenizer,
            [r.question for r in records],
            max_new_tokens=self.max_new_tokens,
            **self._kw(),
        )
        recall = rouge_l(generated, [r.answer for r in records], use_stemmer=True)["recall"]
        ratios = tofu_truth_ratios(model, tokenizer, records, **self._kw())
        return {
            "probability": probability,
            "rouge_l_recall": sum(recall) / len(recall),
            "truth_ratio_score": truth_ratio_score(ratios),
        }

    def label(self, key: str) -> str | None:
        return {
            "tofu/forget_quality": "TOFU forget quality (KS p-value)",
            "tofu/model_utility": "TOFU model utility",
            "tofu/forget_truth_ratio": (
                "TOFU truth ratio (forget, mean min(R, 1/R))"
                if self.forget_truth_ratio == "symmetric"
                else "TOFU truth ratio (forget, mean R)"
            ),
        }.get(key)

    def verdict(self, report) -> list[str]:
        after = report.get("after") or {}
        quality, utility = after.get("tofu/forget_quality"), after.get("tofu/model_utility")
        lines = []
        if quality is not None:
            lines.append(f"TOFU forget quality {quality:.3g} (KS p-value against the retain model)")
        elif after.get("tofu/forget_truth_ratio") is not None:
            lines.append(
                "TOFU forget quality not computed: give retain_model or retain_truth_ratios"
            )
        if utility is not None:
            sets = [
                n for n in ("retain", "real_authors", "world_facts") if getattr(self, n) is not None
            ]
            lines.append(
                f"TOFU model utility {utility:.3f} (harmonic mean over {', '.join(sets)}; "
                "ROUGE-L recall on text, Porter-stemmed as TOFU)"
            )
        return lines
