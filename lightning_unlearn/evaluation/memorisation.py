"""Verbatim memorisation: does the model still continue a forget document word for word?

For each document, the first ``prefix_len`` tokens are the prompt; the model continues greedily
for as many tokens as the true continuation has (at most ``max_new_tokens``); the generation is
scored against the truth on token ids:

* ROUGE-L F1 (Lin 2004): ``2PR / (P + R)`` with ``P = LCS / len(generated)`` and
  ``R = LCS / len(truth)``, LCS the longest common subsequence;
* exact-match length: the number of leading generated tokens equal to the truth.

Used by TOFU/MUSE-style evaluations of unlearning (Maini et al. 2024; Shi et al. 2024).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = [
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

    A manual loop with the KV cache: it never stops early at an end-of-sequence token, so the
    generation has the truth's length.
    """
    if new_tokens <= 0:
        return []
    device = next(model.parameters()).device
    ids = prefix.reshape(1, -1).to(device)
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
    generated: list[int] = []
    next_id = out.logits[:, -1].argmax(-1, keepdim=True)
    past, length = out.past_key_values, ids.size(1)
    for _ in range(new_tokens - 1):
        generated.append(int(next_id))
        length += 1
        mask = torch.ones((1, length), dtype=torch.long, device=device)
        out = model(input_ids=next_id, attention_mask=mask, past_key_values=past, use_cache=True)
        past = out.past_key_values
        next_id = out.logits[:, -1].argmax(-1, keepdim=True)
    generated.append(int(next_id))
    return generated


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
    was_training = model.training
    model.eval()
    per_document = []
    try:
        for ids in input_ids_list:
            ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
            truth = ids[prefix_len : prefix_len + max_new_tokens].tolist()
            if not truth:
                continue
            generated = greedy_continuation(model, ids[:prefix_len], len(truth))
            per_document.append(
                {
                    "rouge_l": rouge_l_f1(generated, truth),
                    "exact_match_len": exact_match_length(generated, truth),
                    "length": len(truth),
                }
            )
    finally:
        model.train(was_training)
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
