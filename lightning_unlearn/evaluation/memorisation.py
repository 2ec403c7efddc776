"""Memorisation: does the model still continue a forget document word for word?

Two metrics of the evaluation seam:

* :class:`Memorisation` (per-token statistics of one teacher-forced pass): exact memorisation,
  the share of target tokens the greedy argmax predicts, and extraction strength, ``1 - k/T``
  (:mod:`.memorisation_math`);
* :class:`VerbatimMemorisation` (it generates): MUSE's VerbMem, the model's greedy continuation of
  each document's first ``prefix_tokens`` against the true next ``continuation_tokens``, ROUGE-L
  F1 on text (as MUSE; or on token ids).

The function below is the token-id form the library had first:

For each document, the first ``prefix_len`` tokens are the prompt; the model continues greedily
for as many tokens as the true continuation has (at most ``max_new_tokens``); the generation is
scored against the truth on token ids:

* ROUGE-L F1 (Lin 2004): ``2PR / (P + R)`` with ``P = LCS / len(generated)`` and
  ``R = LCS / len(truth)``, LCS the longest common subsequence;
* exact-match length: the number of leading generated tokens equal to the truth.

Used by TOFU/MUSE-style evaluations of unlearning (Maini et al. 2024; Shi et al. 2024).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from .base import GenerationMetric, MetricResult, SplitTexts, TokenMetric
from .documents import SplitDocuments, padded
from .generation import greedy_generate
from .memorisation_math import (
    FORMS,
    drop_last_target,
    exact_memorisation,
    extraction_strength,
)
from .rouge import rouge_l

__all__ = [
    "Memorisation",
    "VerbatimMemorisation",
    "lcs_length",
    "rouge_l_f1",
    "exact_match_length",
    "greedy_continuation",
    "verbatim_memorisation",
]


def lcs_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common subsequence of two token sequences (O(len(a)·len(b)))."""
    a, b = list(a), list(b)
    if not a or not b:
        return 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l_f1(generated: Sequence[int], reference: Sequence[int]) -> float:
    """ROUGE-L F1 between two token-id sequences; 0 when either is empty or nothing matches."""
    lcs = lcs_length(generated, reference)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(generated), lcs / len(reference)
    return 2 * precision * recall / (precision + recall)


def exact_match_length(generated: Sequence[int], reference: Sequence[int]) -> int:
    """Number of leading tokens of ``generated`` equal to ``reference``."""
    n = 0
    for g, r in zip(generated, reference):
        if g != r:
            break
        n += 1
    return n


@torch.no_grad()
def greedy_continuation(model: nn.Module, prefix: Tensor, new_tokens: int) -> list[int]:
    """Greedy (argmax) continuation of one 1-D ``prefix`` for exactly ``new_tokens`` tokens.

    It never stops early at an end-of-sequence token, so the generation has the truth's length
    (:func:`~lightning_unlearn.evaluation.generation.greedy_generate`, one prompt).
    """
    if new_tokens <= 0:
        return []
    ids = prefix.reshape(-1).tolist()
    return greedy_generate(model, [ids], max_new_tokens=new_tokens, pad_token_id=0)[0]


@torch.no_grad()
def verbatim_memorisation(
    model: nn.Module,
    input_ids_list: Sequence[Sequence[int] | Tensor],
    prefix_len: int,
    max_new_tokens: int,
) -> dict[str, float | int | list[dict[str, float | int]]]:
    """Greedy continuation of each document's prefix, scored against its true continuation.

    Args:
        model: a transformers causal LM (any module returning ``.logits`` and supporting
            ``past_key_values``).
        input_ids_list: one token-id sequence per document (no padding).
        prefix_len: tokens given as the prompt.
        max_new_tokens: most tokens generated per document; fewer when the document ends sooner.

    Returns:
        ``{"rouge_l": mean F1, "exact_match_len": mean length, "documents": n, "per_document":
        [{"rouge_l", "exact_match_len", "length"}, ...]}``. Documents with no token after the
        prefix are skipped.

    Raises:
        ValueError: bad lengths, or no document is longer than ``prefix_len``.
    """
    if prefix_len < 1 or max_new_tokens < 1:
        raise ValueError(
            f"prefix_len and max_new_tokens must be >= 1, got {prefix_len} and {max_new_tokens}"
        )
    documents = [
        torch.as_tensor(ids, dtype=torch.long).reshape(-1).tolist() for ids in input_ids_list
    ]
    documents = [ids for ids in documents if ids[prefix_len : prefix_len + max_new_tokens]]
    truths = [ids[prefix_len : prefix_len + max_new_tokens] for ids in documents]
    generated = greedy_generate(
        model,
        [ids[:prefix_len] for ids in documents],
        max_new_tokens=[len(t) for t in truths],
        pad_token_id=0,
    )
    per_document = [
        {"rouge_l": rouge_l_f1(g, t), "exact_match_len": exact_match_length(g, t), "length": len(t)}
        for g, t in zip(generated, truths)
    ]
    if not per_document:
        raise ValueError(
            f"no document has more than prefix_len={prefix_len} tokens; lower prefix_len or "
            "give longer documents"
        )
    n = len(per_document)
    return {
        "rouge_l": sum(d["rouge_l"] for d in per_document) / n,
        "exact_match_len": sum(d["exact_match_len"] for d in per_document) / n,
        "documents": n,
        "per_document": per_document,
    }


class Memorisation(TokenMetric):
    """Exact memorisation and extraction strength of every document, from the argmax hits of one
    teacher-forced pass (:func:`~.memorisation_math.exact_memorisation`,
    :func:`~.memorisation_math.extraction_strength`): ``memorisation/{split}_exact`` and
    ``memorisation/{split}_extraction`` (means over documents), per document ``exact`` and
    ``extraction``.

    Args:
        splits: the splits to report (``None``: every evaluated split).
        form: ``"paper"`` (every target token, ES 0 when no suffix is reproduced; Tirumala et al.,
            Carlini et al. / Wang et al.) or ``"open-unlearning"`` (each document's last target,
            the EOS of a QA answer, dropped; ES ``1/T`` when no suffix is reproduced: the form
            TOFU and MUSE numbers are reported in). See :mod:`.memorisation_math`.
    """

    prefix = "memorisation"

    def __init__(
        self, *, splits: tuple[str, ...] | None = ("forget", "approximate"), form: str = "paper"
    ) -> None:
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}")
        self.splits = None if splits is None else tuple(splits)
        self.form = form

    def compute(self, documents: Mapping[str, SplitDocuments]) -> MetricResult:
        result = MetricResult()
        for split, docs in documents.items():
            if self.splits is not None and split not in self.splits or not docs.correct:
                continue
            correct, mask = padded(docs.correct, fill=False)
            if self.form == "open-unlearning":
                mask = drop_last_target(mask)
            exact = exact_memorisation(correct, mask).tolist()
            extraction = extraction_strength(correct, mask, form=self.form).tolist()
            result.values[f"memorisation/{split}_exact"] = _mean(exact)
            result.values[f"memorisation/{split}_extraction"] = _mean(extraction)
            result.documents[split] = {
                "memorisation/exact": exact,
                "memorisation/extraction": extraction,
            }
        return result

    def label(self, key: str) -> str:
        split, _, what = key.removeprefix("memorisation/").rpartition("_")
        form = "" if self.form == "paper" else ", open-unlearning's form"
        return {
            "exact": f"exact memorisation {split}{form}",
            "extraction": f"extraction strength {split}{form}",
        }.get(what, key)


class VerbatimMemorisation(GenerationMetric):
    """MUSE's VerbMem (Shi et al. 2024): the greedy continuation of each document's first
    ``prefix_tokens`` tokens against its true next ``continuation_tokens`` (fewer when the document
    ends sooner), ROUGE-L F1; ``verbmem/{split}_rouge_l`` (mean over documents), per document
    ``rouge_l``. Decoding is batched (:func:`~.generation.greedy_generate`, equal to
    one-at-a-time decoding) and never stops at an end-of-sequence token.

    Args:
        prefix_tokens: the prompt (MUSE: 32).
        continuation_tokens: the most tokens generated and compared (MUSE: 128).
        rouge: ``"text"`` (ROUGE-L on words of the decoded texts, torchmetrics, as MUSE, so the
            figures compare) or ``"tokens"`` (on token ids, :func:`rouge_l_f1`).
        splits: the splits whose documents are continued.
        batch_size: prompts decoded together.
    """

    prefix = "verbmem"

    def __init__(
        self,
        *,
        prefix_tokens: int = 32,
        continuation_tokens: int = 128,
        rouge: str = "text",
        splits: tuple[str, ...] = ("forget", "approximate"),
        batch_size: int = 16,
    ) -> None:
        if prefix_tokens < 1 or continuation_tokens < 1:
            raise ValueError(
                f"prefix_tokens and continuation_tokens must be >= 1, got {prefix_tokens} and "
                f"{continuation_tokens}"
            )
        if rouge not in ("text", "tokens"):
            raise ValueError(f"rouge must be 'text' or 'tokens', got {rouge!r}")
        self.prefix_tokens, self.continuation_tokens = int(prefix_tokens), int(continuation_tokens)
        self.rouge, self.splits, self.batch_size = rouge, tuple(splits), int(batch_size)

    def compute(self, model, tokenizer, texts: Mapping[str, SplitTexts]) -> MetricResult:
        result = MetricResult()
        p, c = self.prefix_tokens, self.continuation_tokens
        for split, split_texts in texts.items():
            docs = split_texts.input_ids
            usable = [i for i, ids in enumerate(docs) if len(ids) > p]
            truths = [docs[i][p : p + c] for i in usable]
            generated = greedy_generate(
                model,
                [docs[i][:p] for i in usable],
                max_new_tokens=[len(t) for t in truths],
                pad_token_id=tokenizer.pad_token_id or 0,
                batch_size=self.batch_size,
            )
            if self.rouge == "text":
                scores = rouge_l(tokenizer.batch_decode(generated), tokenizer.batch_decode(truths))[
                    "f1"
                ]
            else:
                scores = [rouge_l_f1(g, t) for g, t in zip(generated, truths)]
            per_doc = [math.nan] * len(docs)
            for i, score in zip(usable, scores):
                per_doc[i] = float(score)
            result.values[f"verbmem/{split}_rouge_l"] = _mean(per_doc)
            result.documents[split] = {"verbmem/rouge_l": per_doc}
        return result

    def label(self, key: str) -> str:
        split = key.removeprefix("verbmem/").removesuffix("_rouge_l")
        on = "text" if self.rouge == "text" else "token ids"
        return (
            f"VerbMem {split} (ROUGE-L F1 on {on}, {self.prefix_tokens}+{self.continuation_tokens})"
        )


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan
