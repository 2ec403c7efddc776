"""Word-level ROUGE-L against longest common subsequences worked out by hand, and against the
``rouge_score`` package that TOFU and MUSE use, when it is installed."""

from __future__ import annotations

import sys

import pytest

from lightning_unlearn.evaluation.rouge import rouge_l


def _one(prediction: str, reference: str, **kwargs) -> tuple[float, float, float]:
    scores = rouge_l([prediction], [reference], **kwargs)
    return scores["precision"][0], scores["recall"][0], scores["f1"][0]


def test_one_word_changed():
    # LCS "the cat on the mat" = 5 of 6 words on both sides.
    p, r, f = _one("the cat sat on the mat", "the cat lay on the mat")
    assert p == pytest.approx(5 / 6) and r == pytest.approx(5 / 6) and f == pytest.approx(5 / 6)


def test_short_prediction_has_full_precision_low_recall():
    # LCS "the cat" = 2: P = 2/2, R = 2/6, F = 2·1·(1/3) / (4/3) = 1/2. TOFU reads R, MUSE F.
    p, r, f = _one("the cat", "the cat sat on the mat")
    assert (p, r) == (pytest.approx(1.0), pytest.approx(1 / 3))
    assert f == pytest.approx(0.5)


def test_order_matters_unlike_bag_of_words():
    # Reversed sentence: every word matches (ROUGE-1 = 1) but the LCS is 3 ("the on the").
    p, r, f = _one("mat the on sat cat the", "the cat sat on the mat")
    assert p == pytest.approx(0.5) and r == pytest.approx(0.5) and f == pytest.approx(0.5)


def test_case_and_punctuation_are_ignored():
    assert _one("The Cat, sat!", "the cat sat") == pytest.approx((1.0, 1.0, 1.0))


@pytest.mark.parametrize(
    ("prediction", "reference"), [("", "a cat"), ("a cat", ""), ("", ""), ("?!", "a"), ("x", "y")]
)
def test_empty_or_disjoint_scores_zero(prediction, reference):
    assert _one(prediction, reference) == (0.0, 0.0, 0.0)


def test_per_pair_lists_in_order():
    scores = rouge_l(["a b c d", "", "a"], ["a b c d", "a", "b a"])
    assert scores["f1"] == pytest.approx([1.0, 0.0, 2 / 3])
    assert scores["recall"] == pytest.approx([1.0, 0.0, 0.5])
    assert scores["precision"] == pytest.approx([1.0, 0.0, 1.0])
    assert rouge_l([], []) == {"f1": [], "recall": [], "precision": []}


def test_length_mismatch_is_named():
    with pytest.raises(ValueError, match="2 predictions and 1 references"):
        rouge_l(["a", "b"], ["a"])


def test_no_stemmer_needs_neither_nltk_nor_rouge_score(monkeypatch):
    monkeypatch.setitem(sys.modules, "nltk", None)  # any `import nltk` now fails
    monkeypatch.setitem(sys.modules, "rouge_score", None)
    assert _one("the cat sat on the mat", "the cat lay on the mat")[2] == pytest.approx(5 / 6)


def test_stemmer_matches_word_forms():
    pytest.importorskip("nltk")
    # Stemmed: "cats"→"cat", "running"→"run" ("was" has 3 letters: never stemmed).
    assert _one("the cats were running", "the cat was run")[1] == pytest.approx(1 / 4)
    assert _one("the cats were running", "the cat was run", use_stemmer=True)[1] == pytest.approx(
        3 / 4
    )


PAIRS = [
    ("The cat sat on the mat.", "the cat lay on the mat"),
    ("Harry Potter's friends were running to Hogwarts!", "Harry ran with his friend to Hogwarts"),
    ("", "anything"),
    ("1984 was written by George Orwell in 1949", "George Orwell wrote 1984, published 1949."),
    ("studies studying studied", "study studies"),
    ("a a a b", "a b a b a"),
]


@pytest.mark.parametrize("use_stemmer", [False, True])
def test_agrees_with_rouge_score_package(use_stemmer):
    """TOFU (``use_stemmer=True``, recall) and MUSE (``use_stemmer=False``, F1) use this scorer."""
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    if use_stemmer:
        pytest.importorskip("nltk")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)
    ours = rouge_l([p for p, _ in PAIRS], [r for _, r in PAIRS], use_stemmer=use_stemmer)
    for i, (prediction, reference) in enumerate(PAIRS):
        theirs = scorer.score(reference, prediction)["rougeL"]  # score(target, prediction)
        assert ours["precision"][i] == pytest.approx(theirs.precision, abs=1e-6)
        assert ours["recall"][i] == pytest.approx(theirs.recall, abs=1e-6)
        assert ours["f1"][i] == pytest.approx(theirs.fmeasure, abs=1e-6)
