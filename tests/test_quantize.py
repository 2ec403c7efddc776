"""Round-to-nearest weight quantization: grid properties per group, hand-worked values, and a
model copy that leaves the original (and tied embeddings) alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_unlearn.attacks.quantize import quantize_model, quantize_weights_rtn


def _groups(weight: torch.Tensor, group_size: int):
    """(row, slice) of every group, cut independently of the implementation."""
    for row in range(weight.shape[0]):
        for start in range(0, weight.shape[1], group_size):
            yield weight[row, start : start + group_size]


@pytest.fixture(scope="module")
def weight():
    # 160 input weights: 2 full groups of 64 and a last one of 32; 3 groups of 48 and one of 16.
    # Rows 2 and 3 are shifted so that all their weights are positive / negative: one-sign
    # groups, where a zero point clamped into [0, 2**bits - 1] would lose the top of the range.
    weight = torch.randn(6, 160, generator=torch.Generator().manual_seed(0)) * 0.02
    return weight + torch.tensor([0.0, 0.0, 0.2, -0.2, 0.0, 0.0])[:, None]


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("group_size", [64, 48])
def test_each_group_is_on_its_own_grid(weight, bits, group_size):
    w_hat = quantize_weights_rtn(weight, bits=bits, group_size=group_size)
    assert w_hat.shape == weight.shape and w_hat.dtype == weight.dtype
    for original, quantized in zip(_groups(weight, group_size), _groups(w_hat, group_size)):
        assert quantized.unique().numel() <= 2**bits
        scale = (original.max() - original.min()) / (2**bits - 1)
        assert (quantized - original).abs().max() <= scale / 2 * (1 + 1e-5) + 1e-9


def test_eight_bits_much_closer_than_four(weight):
    error = {b: (quantize_weights_rtn(weight, bits=b) - weight).abs().mean() for b in (4, 8)}
    assert error[8] < error[4] / 8  # the step is 255/15 = 17 times smaller


def test_hand_worked_groups():
    # Group [-1, 0, 0.6, 2] at 2 bits: scale 3/3 = 1, zero round(1) = 1,
    # q = round(w) + 1 = [0, 1, 2, 3] -> w_hat = [-1, 0, 1, 2].
    # Group [0.2, 1.2, 2.2, 3.2]: scale 1, zero round(-0.2) = 0 -> [0, 1, 2, 3]: the integer zero
    # point shifts the grid by up to half a step (GPTQ/AWQ convention).
    w = torch.tensor([[-1.0, 0.0, 0.6, 2.0, 0.2, 1.2, 2.2, 3.2]])
    expected = torch.tensor([[-1.0, 0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 3.0]])
    assert torch.allclose(quantize_weights_rtn(w, bits=2, group_size=4), expected)
    # One bit, one group of 3 plus a last group of 1: [0, 1, 3] -> scale 3, q = [0, 0, 1].
    w = torch.tensor([[0.0, 1.0, 3.0, 5.0]])
    expected = torch.tensor([[0.0, 0.0, 3.0, 5.0]])
    assert torch.allclose(quantize_weights_rtn(w, bits=1, group_size=3), expected)


def test_constant_groups_are_exact_and_finite():
    w = torch.tensor([[0.3] * 4 + [0.0] * 4 + [-2.5] * 4])
    w_hat = quantize_weights_rtn(w, bits=4, group_size=4)
    assert torch.isfinite(w_hat).all()
    assert torch.equal(w_hat, w)


def test_dtype_kept_and_input_untouched(weight):
    w = weight.to(torch.bfloat16)
    before = w.clone()
    w_hat = quantize_weights_rtn(w, bits=4, group_size=64)
    assert w_hat.dtype == torch.bfloat16
    assert torch.equal(w, before)


@pytest.mark.parametrize(
    ("tensor", "options", "message"),
    [
        (torch.zeros(4), {"bits": 4}, "2-D"),
        (torch.zeros(2, 4, dtype=torch.long), {"bits": 4}, "floating-point"),
        (torch.tensor([[0.0, float("nan")]]), {"bits": 4}, "NaN"),
        (torch.zeros(2, 4), {"bits": 0}, "bits"),
        (torch.zeros(2, 4), {"bits": 4, "group_size": 0}, "group_size"),
    ],
)
def test_bad_inputs_are_named(tensor, options, message):
    with pytest.raises(ValueError, match=message):
        quantize_weights_rtn(tensor, **options)


# ------------------------------------------------------------------------------ whole models
@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    from lightning_unlearn.testing import build_tiny_model

    path = build_tiny_model(tmp_path_factory.mktemp("tiny-untied"))
    return AutoModelForCausalLM.from_pretrained(path).eval()


@pytest.fixture(scope="module")
def tiny_tied_llama(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    from lightning_unlearn.testing import build_tiny_model

    path = build_tiny_model(tmp_path_factory.mktemp("tiny-tied"), tie_word_embeddings=True)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    return model


def _linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def test_original_bit_identical_and_copy_quantized(tiny_llama):
    before = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
    quantized = quantize_model(tiny_llama, bits=4)
    after = tiny_llama.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)

    original, copy = dict(tiny_llama.named_modules()), dict(quantized.named_modules())
    names = [n for n in _linear_names(tiny_llama) if n != "lm_head"]
    assert len(names) == 14  # 2 blocks × (q, k, v, o, gate, up, down)
    for name in names:
        assert copy[name].weight is not original[name].weight
        assert not torch.equal(copy[name].weight, original[name].weight), name
        for group in _groups(copy[name].weight, 64):
            assert group.unique().numel() <= 16
    assert torch.equal(copy["lm_head"].weight, original["lm_head"].weight)
    assert torch.equal(copy["model.embed_tokens"].weight, original["model.embed_tokens"].weight)

    report = quantized.quantization_report
    assert report["layers_quantized"] == 14 and sorted(report["quantized"]) == sorted(names)
    assert report["parameters_quantized"] == sum(copy[n].weight.numel() for n in names)
    assert report["skipped"]["lm_head"] == "in skip"
    assert "embedding" in report["skipped"]["model.embed_tokens"]
    assert not hasattr(tiny_llama, "quantization_report")


def test_quantized_model_runs_and_eight_bits_stays_closer(tiny_llama):
    ids = torch.randint(1, 300, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = tiny_llama(input_ids=ids).logits
        gap = {}
        for bits in (4, 8):
            out = quantize_model(tiny_llama, bits=bits)(input_ids=ids).logits
            assert out.shape == logits.shape and torch.isfinite(out).all()
            gap[bits] = (out - logits).abs().max()
    assert 0 < gap[8] < gap[4]


def test_tied_embeddings_stay_tied_and_full_precision_by_default(tiny_tied_llama):
    quantized = quantize_model(tiny_tied_llama, bits=4, skip=())
    assert quantized.lm_head.weight is quantized.model.embed_tokens.weight
    assert torch.equal(quantized.lm_head.weight, tiny_tied_llama.lm_head.weight)
    report = quantized.quantization_report
    assert report["layers_quantized"] == 14
    assert "tied to the input embedding" in report["skipped"]["lm_head"]


def test_include_embeddings_quantizes_the_tied_matrix_once(tiny_tied_llama):
    original = tiny_tied_llama.model.embed_tokens.weight.clone()
    quantized = quantize_model(tiny_tied_llama, bits=2, include_embeddings=True)
    embedding = quantized.model.embed_tokens.weight
    assert quantized.lm_head.weight is embedding
    assert torch.equal(tiny_tied_llama.model.embed_tokens.weight, original)
    assert torch.equal(embedding, quantize_weights_rtn(original, bits=2, group_size=64))
    report = quantized.quantization_report
    assert report["layers_quantized"] == 15 and "model.embed_tokens" in report["quantized"]
    assert report["skipped"]["lm_head"] == "tied to the input embedding: quantized with it"


def test_skip_matches_dotted_components(tiny_llama):
    quantized = quantize_model(tiny_llama, bits=4, skip=("lm_head", "mlp", "layers.0"))
    original = dict(tiny_llama.named_modules())
    for name, module in quantized.named_modules():
        if isinstance(module, nn.Linear):
            kept = name == "lm_head" or ".mlp." in name or name.startswith("model.layers.0.")
            assert torch.equal(module.weight, original[name].weight) is kept, name
    assert quantized.quantization_report["layers_quantized"] == 4  # layer 1's q, k, v, o


def test_gpt2_conv1d_is_grouped_along_its_input_dimension(tmp_path):
    from transformers import AutoModelForCausalLM, GPT2Config

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=1, n_head=2)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    quantized = quantize_model(model, bits=2, group_size=16)
    c_attn = quantized.transformer.h[0].attn.c_attn.weight  # Conv1D: [in, out]
    assert not torch.equal(c_attn, model.transformer.h[0].attn.c_attn.weight)
    assert all(g.unique().numel() <= 4 for g in _groups(c_attn.t(), 16))
    assert quantized.quantization_report["layers_quantized"] == 4  # c_attn, c_proj, c_fc, c_proj


def _lora_model(model, *, merge_method: bool = True):
    """A copy of ``model`` with rank-4 LoRA adapters on every projection, their B matrices made
    non-zero so the adapters change the output (peft starts B at zero)."""
    import copy

    from peft import LoraConfig, get_peft_model, inject_adapter_in_model

    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    base = copy.deepcopy(model)
    peft = get_peft_model(base, config) if merge_method else inject_adapter_in_model(config, base)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    return peft


def test_an_unmerged_lora_model_is_merged_before_quantizing(tiny_llama):
    """The adapters are merged into a copy, then the merged weights quantized: the same weights
    as quantizing the merged model, no adapter matrix quantized on its own, the peft model
    untouched."""
    import copy

    peft = _lora_model(tiny_llama)
    before = {k: v.clone() for k, v in peft.state_dict().items()}
    quantized = quantize_model(peft, bits=4)
    reference = quantize_model(copy.deepcopy(peft).merge_and_unload(), bits=4)
    report = quantized.quantization_report
    assert report["lora_merged"] and not reference.quantization_report["lora_merged"]
    assert not any("lora" in name for name in report["quantized"])
    assert report["layers_quantized"] == 14
    assert quantized.state_dict().keys() == reference.state_dict().keys()
    for key, value in reference.state_dict().items():
        assert torch.equal(quantized.state_dict()[key], value), key
    # the merge changed the projection it merged into (the adapters were not zero)
    merged_q = reference.model.layers[0].self_attn.q_proj.weight
    plain_q = quantize_model(tiny_llama, bits=4).model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(merged_q, plain_q)
    assert all(torch.equal(peft.state_dict()[k], v) for k, v in before.items())


def test_lora_layers_that_cannot_be_merged_are_refused(tiny_llama):
    injected = _lora_model(tiny_llama, merge_method=False)  # adapters, no PeftModel around them
    with pytest.raises(ValueError, match="unmerged LoRA adapter layers.*merge them first"):
        quantize_model(injected, bits=8)
