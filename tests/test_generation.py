"""Batched greedy decoding equals one-prompt decoding, on tiny random Llama (rotary positions) and
GPT-2 (learned absolute positions, so a wrong ``position_ids`` under left padding shows)."""

from __future__ import annotations

import pytest
import torch

from lightning_unlearn.evaluation.generation import greedy_generate, greedy_generate_one

LENGTHS = (3, 7, 12, 1, 9, 5)
BUDGETS = (6, 1, 9, 4, 0, 7)


def _build_tiny_gpt2(out_dir, vocab_size: int = 384):
    from transformers import AutoModelForCausalLM, GPT2Config

    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=128,
        n_embd=32,
        n_layer=2,
        n_head=4,
        initializer_range=0.3,  # strong position embeddings: a wrong position changes tokens
        bos_token_id=0,
        eos_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config).save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model(request, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    from lightning_unlearn.testing import build_tiny_model

    out = tmp_path_factory.mktemp(f"tiny-{request.param}")
    path = build_tiny_model(out) if request.param == "llama" else _build_tiny_gpt2(out)
    return AutoModelForCausalLM.from_pretrained(path).eval()


@pytest.fixture(scope="module")
def prompts():
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(1, 380, (n,), generator=generator).tolist() for n in LENGTHS]


@pytest.fixture(scope="module")
def reference(model, prompts):
    """Unpadded, uncached decoding of each prompt for max(BUDGETS) tokens."""
    return [greedy_generate_one(model, p, max(BUDGETS)) for p in prompts]


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_batched_equals_one_at_a_time(model, prompts, reference, batch_size):
    out = greedy_generate(
        model, prompts, max_new_tokens=list(BUDGETS), pad_token_id=0, batch_size=batch_size
    )
    assert out == [ref[:budget] for ref, budget in zip(reference, BUDGETS)]
    assert [len(o) for o in out] == list(BUDGETS)


def test_single_budget_and_tensor_prompts(model, prompts, reference):
    out = greedy_generate(
        model, [torch.tensor(p) for p in prompts], max_new_tokens=5, pad_token_id=3, batch_size=4
    )
    assert out == [ref[:5] for ref in reference]


def test_eos_stops_each_row_and_is_not_returned(model, prompts, reference):
    eos = reference[2][3]  # the 4th token the 12-token prompt generates
    out = greedy_generate(model, prompts, max_new_tokens=9, pad_token_id=0, eos_token_id=eos)
    expected = [ref[: ref.index(eos)] if eos in ref else ref for ref in reference]
    assert out == [e[:9] for e in expected]
    assert len(out[2]) <= 3  # stopped at (or before, if repeated) the 4th token
    assert out == [greedy_generate_one(model, p, 9, eos_token_id=eos) for p in prompts]


def test_matches_hf_generate_on_one_unpadded_prompt(model, prompts):
    prompt = torch.tensor([prompts[2]])
    hf = model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=8,
        do_sample=False,
        pad_token_id=0,
        eos_token_id=None,
    )
    new = hf[0, prompt.shape[1] :].tolist()
    assert greedy_generate(model, [prompts[2]], max_new_tokens=8, pad_token_id=0) == [new]
    assert len(new) == 8


@pytest.mark.parametrize("training", [True, False])
def test_mode_restored(model, prompts, training):
    model.train(training)
    try:
        greedy_generate(model, prompts[:2], max_new_tokens=2, pad_token_id=0)
        greedy_generate_one(model, prompts[0], 2)
        assert all(m.training is training for m in model.modules())
    finally:
        model.eval()


def test_zero_budget_and_no_prompts_skip_the_model(model):
    assert greedy_generate(model, [[1, 2, 3]], max_new_tokens=0, pad_token_id=0) == [[]]
    assert greedy_generate(model, [], max_new_tokens=4, pad_token_id=0) == []


def test_bad_inputs_are_named(model):
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        greedy_generate(model, [[1], []], max_new_tokens=2, pad_token_id=0)
    with pytest.raises(ValueError, match="2 entries for 3 prompts"):
        greedy_generate(model, [[1], [2], [3]], max_new_tokens=[1, 2], pad_token_id=0)
    with pytest.raises(ValueError, match=">= 0"):
        greedy_generate(model, [[1]], max_new_tokens=-1, pad_token_id=0)
    with pytest.raises(ValueError, match="batch_size"):
        greedy_generate(model, [[1]], max_new_tokens=1, pad_token_id=0, batch_size=0)
