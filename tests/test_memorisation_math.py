"""Exact memorisation and extraction strength on rows worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_unlearn.evaluation.memorisation_math import exact_memorisation, extraction_strength

# fmt: off
CORRECT = torch.tensor([
    [1, 1, 0, 1, 1, 1, 0],  # A
    [1, 1, 1, 1, 1, 0, 0],  # B
    [1, 1, 1, 1, 0, 0, 0],  # C
    [0, 1, 0, 0, 1, 1, 0],  # D
    [1, 1, 1, 1, 1, 1, 1],  # E
    [1, 1, 0, 0, 0, 0, 0],  # F
], dtype=torch.bool)
MASK = torch.tensor([
    [1, 1, 1, 1, 1, 0, 0],  # A: 5 targets, then padding (argmax right at 5)
    [1, 1, 1, 1, 1, 0, 0],  # B
    [1, 1, 1, 1, 1, 0, 0],  # C
    [0, 1, 0, 1, 1, 1, 0],  # D: prompt at 0, padding in the middle (2) and at the end (6)
    [0, 0, 0, 0, 0, 0, 0],  # E: no target at all
    [1, 1, 0, 0, 0, 0, 0],  # F: wrong argmax only on padding
], dtype=torch.bool)
# fmt: on


def test_exact_memorisation_by_hand():
    # A: targets [1,1,0,1,1] -> 4/5 (the right argmax on padding at 5 does not count); B: 5/5; C: [1,1,1,1,0] -> 4/5;
    # D: targets at 1,3,4,5 = [1,0,1,1] -> 3/4 (the wrong padding at 2 and 6 is ignored);
    # E: no targets -> NaN; F: targets [1,1] -> 1 (wrong padding ignored)
    em = exact_memorisation(CORRECT, MASK)
    assert em.dtype == torch.float64
    assert em[[0, 1, 2, 3, 5]].tolist() == [0.8, 1.0, 0.8, 0.75, 1.0]
    assert math.isnan(em[4])


def test_extraction_strength_by_hand():
    # A: T=5, last wrong target has index 2 -> k=3 -> 1 - 3/5 = 0.4
    # B: all correct -> k=0 -> 1.0
    # C: the last target is wrong -> k=T=5 -> 0.0 (open-unlearning would give 1/T = 0.2)
    # D: targets [1,0,1,1]; last wrong target index 1 -> k=2 -> 1 - 2/4 = 0.5
    #    (counting the wrong padding at position 6 would wrongly give 0)
    # E: no targets -> NaN; F: targets [1,1] -> 1.0
    es = extraction_strength(CORRECT, MASK)
    assert es.dtype == torch.float64
    assert es[[0, 1, 2, 3, 5]].tolist() == pytest.approx([0.4, 1.0, 0.0, 0.5, 1.0])
    assert math.isnan(es[4])


def test_single_token_rows():
    # one target: correct -> EM 1, ES 1; wrong -> EM 0, ES 0 (k = T = 1)
    correct = torch.tensor([[True], [False]])
    mask = torch.ones(2, 1, dtype=torch.bool)
    assert exact_memorisation(correct, mask).tolist() == [1.0, 0.0]
    assert extraction_strength(correct, mask).tolist() == [1.0, 0.0]


def test_integer_inputs_and_bad_shapes():
    es = extraction_strength(CORRECT.long(), MASK.long())
    assert es[0].item() == pytest.approx(0.4)
    with pytest.raises(ValueError, match=r"\[batch, seq\]"):
        exact_memorisation(CORRECT, MASK[:, :3])
    with pytest.raises(ValueError, match=r"\[batch, seq\]"):
        extraction_strength(CORRECT[0], MASK[0])
