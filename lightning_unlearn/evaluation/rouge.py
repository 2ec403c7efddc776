"""Word-level ROUGE-L between generated and reference texts, through torchmetrics.

ROUGE-L (Lin 2004, https://aclanthology.org/W04-1013/) compares two word sequences by their
longest common subsequence (LCS): ``precision = LCS / len(prediction)``,
``recall = LCS / len(reference)``, ``F1 = 2PR / (P + R)``.

Conventions of the unlearning benchmarks, both scoring with Google's ``rouge_score`` package
(``RougeScorer(...).score(target=reference, prediction=generation)``):

* TOFU (Maini et al. 2024; ``eval_rouge_recall`` in locuslab/tofu and in open-unlearning's
  ``src/evals/metrics/utils.py``) reports ROUGE-L **recall** with ``use_stemmer=True``
  (open-unlearning also logs ``rougeL_f1``).
* MUSE (Shi et al. 2024; ``metrics/logger.py`` in swj0419/muse_bench, used by VerbMem and
  KnowMem through ``mean_rougeL``) reports ROUGE-L **F1** with ``use_stemmer=False``; so do
  this library's VerbMem and KnowMem by default (open-unlearning: ``rouge_type: rougeL_f1``).

:func:`rouge_l` returns all three numbers per pair, so either convention is one key away, and
takes ``use_stemmer`` for TOFU's stemming. torchmetrics tokenises exactly like ``rouge_score``'s
default tokenizer (lower-case, every run of characters outside ``[a-z0-9]`` becomes a space,
split on whitespace, words longer than 3 characters stemmed with nltk's Porter stemmer when
asked), and ``rouge_score`` itself uses nltk's Porter stemmer, so the LCS counts are identical.
The remaining difference: torchmetrics returns float32 tensors, so the values agree with
``rouge_score`` (float64) to about 1e-7, not bit for bit.

Both are tested against those packages' own output (``tests/test_reference_muse.py``).

Dependencies: ROUGE-L without a stemmer needs nothing beyond torchmetrics (its
``functional.text.rouge`` imports only ``re``, ``collections``, ``torch``); ``use_stemmer=True``
needs nltk (a dependency of the library, for TOFU; its Porter stemmer needs no downloaded data).
``rouge_score`` is never needed.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["rouge_l"]


def rouge_l(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    use_stemmer: bool = False,
) -> dict[str, list[float]]:
    """Per-pair ROUGE-L precision, recall and F1 on words.

    Args:
        predictions: generated texts (the model's continuations or answers).
        references: the true texts, one per prediction.
        use_stemmer: Porter-stem words longer than 3 characters before matching, as TOFU does;
            needs ``nltk``. MUSE leaves it off (the default).

    Returns:
        ``{"f1": [...], "recall": [...], "precision": [...]}``, one value per pair, in order.
        A pair where either text has no word (empty, or only punctuation) scores 0.

    Raises:
        ValueError: the two lists differ in length.
        ModuleNotFoundError: ``use_stemmer=True`` without nltk installed.
    """
    from torchmetrics.functional.text.rouge import rouge_score

    if len(predictions) != len(references):
        raise ValueError(
            f"got {len(predictions)} predictions and {len(references)} references; ROUGE-L "
            "pairs them one to one"
        )
    scores: dict[str, list[float]] = {"f1": [], "recall": [], "precision": []}
    for prediction, reference in zip(predictions, references):
        pair = rouge_score(
            str(prediction), str(reference), use_stemmer=use_stemmer, rouge_keys=("rougeL",)
        )
        scores["f1"].append(float(pair["rougeL_fmeasure"]))
        scores["recall"].append(float(pair["rougeL_recall"]))
        scores["precision"].append(float(pair["rougeL_precision"]))
    return scores
