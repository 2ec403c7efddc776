"""Greedy decoding of a causal LM, batched with left padding and the KV cache.

Verbatim-memorisation and question-answering evaluations of unlearning (TOFU, Maini et al. 2024;
MUSE, Shi et al. 2024) score the model's greedy continuation of a prompt. Those benchmarks call
``model.generate(do_sample=False)`` one prompt at a time (MUSE) or on left-padded batches (TOFU);
:func:`greedy_generate` does the same argmax decoding in batches with nothing but the model's
forward, so it works on any transformers causal LM (and wrappers such as peft models) and gives,
for every row, exactly the tokens of the unpadded one-prompt loop :func:`greedy_generate_one`.

How a batch stays exact under padding:

* prompts are padded on the LEFT, so every row's next token is predicted at the last column;
* the attention mask is 0 on the padding, so no real token attends to it;
* ``position_ids`` are counted from each row's first real token
  (``attention_mask.cumsum(-1) - 1``), so rotary/learned positions are those of the unpadded row
  (without them a row padded by ``k`` would see positions shifted by ``k``: nearly harmless
  under rotary embeddings, which see only relative positions, but it changes the tokens of a
  model with learned absolute positions such as GPT-2 — the tests check both);
* at each step the mask grows by one column of ones and each row's position is its own count of
  real tokens so far.

The KV cache is passed back under the name the model returned it with: ``cache`` in recent
transformers 5.x (5.24 here; ``past_key_values`` is a deprecated alias there, to be removed in
5.40), ``past_key_values`` in 4.x. No ``cache_position`` is passed: transformers 5.24 has
dropped it, and 4.x models compute it from the cache length, which counts the padded columns
and so lines up with the padded 2-D mask.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["greedy_generate", "greedy_generate_one"]


def _device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _forward_kwargs(model: nn.Module) -> dict[str, object]:
    """``logits_to_keep=1`` when the forward takes it (only the last position's logits are used)."""
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}


def _cache_key(output) -> str | None:
    """The name the model returned its KV cache under; ``None`` for a model without a cache (it
    is then re-run on the whole sequence at every step: slower, the same tokens)."""
    for key in ("cache", "past_key_values"):
        if getattr(output, key, None) is not None:
            return key
    return None


def _as_token_list(prompt: Sequence[int] | Tensor, index: int) -> list[int]:
    if isinstance(prompt, Tensor):
        prompt = prompt.reshape(-1).tolist()
    tokens = [int(t) for t in prompt]
    if not tokens:
        raise ValueError(
            f"prompt {index} is empty; greedy decoding needs at least one token to condition on "
            "(prepend the BOS token)"
        )
    return tokens


@torch.no_grad()
def _generate_batch(
    model: nn.Module,
    prompts: list[list[int]],
    budgets: list[int],
    *,
    pad_token_id: int,
    eos_token_id: int | None,
    device: torch.device,
    extra: dict[str, object],
) -> list[list[int]]:
    """Greedy continuations of one left-padded batch (every budget >= 1)."""
    rows, width = len(prompts), max(len(p) for p in prompts)
    input_ids = torch.full((rows, width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((rows, width), dtype=torch.long)
    for i, prompt in enumerate(prompts):
        input_ids[i, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        attention_mask[i, width - len(prompt) :] = 1
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    # Positions count real tokens only; padding columns get 0 (masked out anyway).
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)

    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=True,
        **extra,
    )
    cache_key = _cache_key(out)
    generated: list[list[int]] = [[] for _ in range(rows)]
    done = [False] * rows
    while True:
        next_ids = out.logits[:, -1].argmax(-1)
        for i, token in enumerate(next_ids.tolist()):
            if done[i]:
                continue
            if eos_token_id is not None and token == eos_token_id:
                done[i] = True
                continue
            generated[i].append(token)
            done[i] = len(generated[i]) >= budgets[i]
        if all(done):
            return generated
        # Finished rows keep decoding (their tokens are dropped): rows never attend to each other.
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((rows, 1))], dim=-1)
        if cache_key is None:  # no KV cache: the whole sequence again
            input_ids = torch.cat([input_ids, next_ids[:, None]], dim=-1)
            position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
            out = model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                **extra,
            )
            continue
        position_ids = attention_mask.sum(-1, keepdim=True) - 1
        out = model(
            input_ids=next_ids[:, None],
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            **{cache_key: getattr(out, cache_key)},
            **extra,
        )


def greedy_generate(
    model: nn.Module,
    prompts: Sequence[Sequence[int] | Tensor],
    *,
    max_new_tokens: int | Sequence[int],
    pad_token_id: int,
    eos_token_id: int | None = None,
    batch_size: int = 8,
) -> list[list[int]]:
    """Greedy (argmax) continuation of each prompt, in left-padded batches with the KV cache.

    Equivalent, row by row, to :func:`greedy_generate_one` on the unpadded prompt and to
    ``model.generate(do_sample=False)`` (up to float ties between two logits). Prompts are sorted
    by length before batching, so each batch holds prompts of similar length and little padding;
    results come back in the input order. Each step is one forward of the whole batch on one new
    token; a batch stops once every row has finished.

    Args:
        model: a transformers causal LM (or a wrapper, e.g. a peft model, whose forward takes
            ``input_ids``, ``attention_mask``, ``position_ids``, ``use_cache`` and returns
            ``logits`` and the KV cache). It is put in eval mode for the call and restored to
            its previous train/eval mode afterwards.
        prompts: token ids of each prompt, unpadded (lists or 1-D tensors), at least one token each.
        max_new_tokens: most tokens generated per prompt: one number for all, or one per prompt.
            0 gives an empty continuation without running the model.
        pad_token_id: id written into the padding columns. Its value never affects the result
            (padding is masked out); any valid id works, e.g. the EOS id when the tokenizer has
            no pad token.
        eos_token_id: stop a row when it predicts this id. The EOS token itself is NOT included
            in the output (TOFU/MUSE cut the decoded text at EOS the same way). ``None``: always
            generate ``max_new_tokens`` tokens.
        batch_size: prompts decoded together.

    Returns:
        One list of generated token ids per prompt, in input order, without the prompt and
        without the EOS token.

    Raises:
        ValueError: an empty prompt, a negative or mismatched ``max_new_tokens``, a
            ``batch_size`` below 1, or a model that returns no KV cache.
    """
    token_prompts = [_as_token_list(p, i) for i, p in enumerate(prompts)]
    n = len(token_prompts)
    if isinstance(max_new_tokens, int):
        budgets = [max_new_tokens] * n
    else:
        budgets = [int(b) for b in max_new_tokens]
        if len(budgets) != n:
            raise ValueError(
                f"max_new_tokens has {len(budgets)} entries for {n} prompts; give one number or "
                "one per prompt"
            )
    if any(b < 0 for b in budgets):
        raise ValueError(f"max_new_tokens must be >= 0, got {min(budgets)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    results: list[list[int]] = [[] for _ in range(n)]
    # Stable sort by length: batches of similar length, ties keep input order.
    order = sorted((i for i in range(n) if budgets[i] > 0), key=lambda i: len(token_prompts[i]))
    if not order:
        return results
    device, extra = _device(model), _forward_kwargs(model)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            outputs = _generate_batch(
                model,
                [token_prompts[i] for i in batch],
                [budgets[i] for i in batch],
                pad_token_id=pad_token_id,
                eos_token_id=eos_token_id,
                device=device,
                extra=extra,
            )
            for i, tokens in zip(batch, outputs):
                results[i] = tokens
    finally:
        model.train(was_training)
    return results


@torch.no_grad()
def greedy_generate_one(
    model: nn.Module,
    prompt: Sequence[int] | Tensor,
    max_new_tokens: int,
    eos_token_id: int | None = None,
) -> list[int]:
    """Reference greedy decoding of one prompt: no padding, no cache, a full forward per token.

    Quadratic in the length and meant for tests and spot checks of :func:`greedy_generate`;
    same conventions (eval mode restored afterwards, EOS stops and is not returned).

    Args:
        model: a causal LM returning ``logits``.
        prompt: token ids, at least one.
        max_new_tokens: most tokens generated.
        eos_token_id: stop at this id (not included); ``None`` never stops early.

    Returns:
        The generated token ids, without the prompt.
    """
    ids = torch.tensor([_as_token_list(prompt, 0)], dtype=torch.long, device=_device(model))
    generated: list[int] = []
    was_training = model.training
    model.eval()
    try:
        for _ in range(max_new_tokens):
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
            token = int(logits[0, -1].argmax())
            if eos_token_id is not None and token == eos_token_id:
                break
            generated.append(token)
            ids = torch.cat([ids, ids.new_tensor([[token]])], dim=-1)
    finally:
        model.train(was_training)
    return generated
