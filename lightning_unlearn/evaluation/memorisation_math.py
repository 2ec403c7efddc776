"""Token-level memorisation from one teacher-forced forward pass: exact memorisation and extraction
strength, as pure tensor functions.

Both take ``correct[b, t]`` (the model's argmax at target position ``t`` equals the true next
token) and ``mask[b, t]`` (``t`` is a real target position, not prompt or padding), already shifted
so position ``t`` scores target token ``t``. Masked positions may sit anywhere (padding in the
middle or at the end); only the order of the real target positions matters.

* Exact memorisation (EM; Tirumala et al. 2022, "Memorization without overfitting", NeurIPS): the
  share of target tokens the greedy argmax predicts.
* Extraction strength (ES; Carlini et al. 2021, used for unlearning by Wang et al. 2025, "Towards
  effective evaluations and comparisons for LLM unlearning methods", ICLR):
  ``ES = 1 - k / T`` with ``k`` the smallest number of leading target tokens to give the model
  before it reproduces all the rest.

Two forms (``Memorisation(form=...)``), each with its deciding reference:

* ``"paper"`` (the generic default): every target token counts, the final EOS of a QA answer
  included (EM: Tirumala et al. define it over all target tokens; ES: Carlini et al. / Wang et al.
  take ``k`` over ``0..T``, so ES is 0 when not even the last token is reproduced).
* ``"open-unlearning"`` (what TOFU and MUSE numbers are reported in; the TOFU/MUSE experiment
  configs use it): locuslab/open-unlearning ``src/evals/metrics/memorization.py`` drops each
  document's last target token (``tokenwise_vocab_logprobs``: "-1 to ignore eos prediction",
  :func:`drop_last_target`) and loops ``k`` over ``0..T-1`` only, so ES is ``1/T`` when no suffix
  matches (``extraction_strength(..., form="open-unlearning")``). Tested against its output
  (``tests/fixtures/references/open_unlearning_memorisation_mia.json``).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["exact_memorisation", "extraction_strength", "drop_last_target", "FORMS"]

FORMS = ("paper", "open-unlearning")


def _check(correct: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    if correct.shape != mask.shape or correct.dim() != 2:
        raise ValueError(
            f"expected correct and mask of the same shape [batch, seq], got {tuple(correct.shape)} "
            f"and {tuple(mask.shape)}"
        )
    return correct.bool(), mask.bool()


def drop_last_target(mask: Tensor) -> Tensor:
    """``mask`` without each row's last real target position (open-unlearning's EOS drop)."""
    mask = mask.bool()
    rank = torch.cumsum(mask.long(), dim=1)
    return mask & (rank < mask.sum(dim=1, keepdim=True))


def exact_memorisation(correct: Tensor, mask: Tensor) -> Tensor:
    """Share of target tokens whose greedy argmax is the true token, per row (Tirumala et al. 2022).

    Args:
        correct: ``[batch, seq]`` whether the argmax equals the true next token.
        mask: ``[batch, seq]`` real target positions.

    Returns:
        ``[batch]`` float64 in ``[0, 1]``; NaN for a row without target positions.
    """
    correct, mask = _check(correct, mask)
    count = mask.sum(dim=1).double()
    hits = (correct & mask).sum(dim=1).double()
    return torch.where(count > 0, hits / count.clamp_min(1), torch.full_like(count, torch.nan))


def extraction_strength(correct: Tensor, mask: Tensor, *, form: str = "paper") -> Tensor:
    """Extraction strength ``1 - k / T`` per row (Carlini et al. 2021; Wang et al. 2025).

    ``T`` is the number of target positions and ``k`` (0-based, counted over target positions in
    order) the smallest index such that every target from ``k`` to the end is predicted correctly:
    ``k = 0`` (ES 1.0) when all are correct, ``k = T`` (ES 0.0) when the last one is wrong. In
    between, ``k`` is one past the last wrong target.

    With teacher forcing on the true prefix ``y_<k``, "the argmax is right at every position from
    ``k`` on" is the same as "greedy decoding from ``y_<k`` reproduces the suffix ``y_>=k``": by
    induction each greedy token is the true one, so the greedy context equals the teacher-forced
    one. One forward pass therefore gives the paper's ``min_k`` over prefixes.

    Wang et al. define ``k`` over ``0..T`` (the empty suffix always matches, so ``k <= T``):
    ``form="paper"``. open-unlearning's ``extraction_strength`` loops ``k`` over ``0..T-1`` only
    and, when no suffix matches, keeps ``k = T - 1`` (ES ``1/T`` instead of 0):
    ``form="open-unlearning"`` (its EOS drop is :func:`drop_last_target`, applied to ``mask``).

    Args:
        correct: ``[batch, seq]`` whether the argmax equals the true next token.
        mask: ``[batch, seq]`` real target positions.
        form: ``"paper"`` or ``"open-unlearning"`` (see above).

    Returns:
        ``[batch]`` float64 in ``[0, 1]``; NaN for a row without target positions.
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    correct, mask = _check(correct, mask)
    count = mask.sum(dim=1)
    # at a target position: its 1-based rank among the row's targets, so that k = the rank of the
    # last wrong target (one past its 0-based index), or 0 when no target is wrong
    rank = torch.cumsum(mask.long(), dim=1)
    wrong = mask & ~correct
    k = (rank * wrong).amax(dim=1) if mask.size(1) else torch.zeros_like(count)
    if form == "open-unlearning":
        k = torch.minimum(k, (count - 1).clamp_min(0))
    strength = 1.0 - k.double() / count.clamp_min(1).double()
    return torch.where(count > 0, strength, torch.full_like(strength, torch.nan))
