"""LoRA (peft) for every method: only adapters train, the reference shares the base weights,
export merges into a plain checkpoint or saves the adapter."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from lightning_unlearn import (
    UNDIAL,
    AdversarialSamples,
    CrossEntropyUnlearning,
    GradientAscent,
    GradientAscentDescent,
    GradientAscentKL,
    LoraSettings,
    NegativePreferenceOptimization,
    PreferenceUnlearning,
    PrimalDualUnlearning,
    RandomLabels,
    RepresentationMisdirection,
    SatImp,
    SimNPO,
    WeightedGradientAscent,
    WhosHarryPotter,
)
from lightning_unlearn.testing import build_method as build
from lightning_unlearn.testing import fit_on_batches as fit

LORA = {"r": 4, "alpha": 8}

# every method, old and new, with the options that make it cheap on the tiny model
ALL_METHODS = [
    (GradientAscent, {}),
    (GradientAscentDescent, {}),
    (GradientAscentKL, {}),
    (AdversarialSamples, {}),
    (RandomLabels, {"target": "random_model"}),
    (NegativePreferenceOptimization, {"retain_term": "kl"}),
    (SimNPO, {}),
    (UNDIAL, {}),
    (RepresentationMisdirection, {"layer": 1, "steering_coefficient": 20.0, "retain_weight": 1.0}),
    (WhosHarryPotter, {"reinforce_steps": 2, "reinforce_lr": 1e-2, "target": "soft"}),
    (PreferenceUnlearning, {"prompt_tokens": 4}),
    (WeightedGradientAscent, {}),
    (SatImp, {}),
    (CrossEntropyUnlearning, {}),
    (PrimalDualUnlearning, {"retain_bound": 1.0}),
]


def merged_state(peft_model, scale: float) -> dict[str, torch.Tensor]:
    """``W + scale * B @ A`` for every adapted linear layer, computed by hand, in HF names."""
    state = {}
    for name, module in peft_model.named_modules():
        if hasattr(module, "base_layer") and hasattr(module, "lora_A"):
            a = module.lora_A["default"].weight
            b = module.lora_B["default"].weight
            state[name + ".weight"] = module.base_layer.weight + scale * b @ a
    for name, param in peft_model.named_parameters():
        if "lora_" not in name:
            state.setdefault(name.replace(".base_layer", ""), param)
    prefix = "base_model.model."
    return {k.removeprefix(prefix): v.detach() for k, v in state.items()}


def storage_bytes(module: torch.nn.Module) -> int:
    """Bytes of distinct parameter storage (shared storage counted once)."""
    seen = {}
    for p in module.parameters():
        storage = p.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


@pytest.mark.parametrize("cls, kwargs", ALL_METHODS, ids=[c.__name__ for c, _ in ALL_METHODS])
def test_every_method_trains_only_adapters_and_exports_merged(
    cls, kwargs, tiny_model_dir, forget_batch, retain_batch, tmp_path
):
    module = build(cls, tiny_model_dir, lora=LORA, learning_rate=1e-2, **kwargs)
    assert module.reference is None
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable), sorted(trainable)[:4]
    before = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    fit(module, forget_batch, retain_batch, 2)
    changed = {n for n, p in module.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable, sorted(changed - trainable)[:4]
    assert any("lora_B" in n for n in changed)  # B starts at 0: the adapter now does something

    out = module.export(tmp_path / "merged")
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in k for k in reloaded.state_dict())
    expected = merged_state(module.model, LORA["alpha"] / LORA["r"])
    got = reloaded.state_dict()
    assert set(got) == set(expected)
    for name, tensor in got.items():
        assert torch.allclose(tensor, expected[name], atol=1e-6), name
    module.eval()
    with torch.no_grad():
        inputs = {k: forget_batch[k] for k in ("input_ids", "attention_mask")}
        assert torch.allclose(reloaded(**inputs).logits, module(forget_batch), atol=1e-4)
    # exporting did not merge the live module's adapters away
    assert any("lora_" in n for n, _ in module.model.named_parameters())


@pytest.mark.parametrize("cls", [GradientAscentKL, NegativePreferenceOptimization])
def test_lora_reference_is_the_same_weights_with_adapters_off(
    cls, tiny_model_dir, forget_batch, retain_batch
):
    full = build(cls, tiny_model_dir)
    lora = build(cls, tiny_model_dir, lora=LORA, learning_rate=1e-2)
    base_bytes = storage_bytes(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    assert full.reference is not None and lora.reference is None
    assert storage_bytes(full) == 2 * base_bytes  # the non-LoRA module holds a second copy
    assert base_bytes < storage_bytes(lora) < 1.2 * base_bytes  # base once + small adapters

    # the weights the reference pass reads live in the trained model's storage
    used = []
    hooks = [
        m.register_forward_pre_hook(lambda mod, _a: used.append(mod.weight.data_ptr()))
        for name, m in lora.model.named_modules()
        if name.endswith(("base_layer", "embed_tokens", "lm_head"))
    ]
    lora.reference_logits(forget_batch)
    for h in hooks:
        h.remove()
    model_ptrs = {p.data_ptr() for p in lora.model.parameters()}
    assert used and set(used) <= model_ptrs

    fit(lora, forget_batch, retain_batch, 2)
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora.eval()
    with torch.no_grad():
        inputs = {k: forget_batch[k] for k in ("input_ids", "attention_mask")}
        ref = lora.reference_logits(forget_batch)
        assert torch.allclose(ref, original(**inputs).logits, atol=1e-5)
        assert not torch.allclose(ref, lora(forget_batch), atol=1e-3)


def test_adapter_only_export_loads_with_peft(tiny_model_dir, forget_batch, retain_batch, tmp_path):
    from peft import PeftModel

    settings = LoraSettings(**LORA, save_adapter_only=True)
    module = build(
        NegativePreferenceOptimization, tiny_model_dir, lora=settings, learning_rate=1e-2
    )
    fit(module, forget_batch, retain_batch, 2)
    out = module.export(tmp_path / "adapter")
    assert (out / "adapter_config.json").is_file()
    assert (out / "adapter_model.safetensors").is_file()
    assert not (out / "model.safetensors").exists()
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out)
    module.eval()
    with torch.no_grad():
        inputs = {k: forget_batch[k] for k in ("input_ids", "attention_mask")}
        assert torch.allclose(loaded(**inputs).logits, module(forget_batch), atol=1e-5)
        original = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(**inputs).logits
        assert not torch.allclose(loaded(**inputs).logits, original, atol=1e-3)


def test_rmu_with_lora_trains_only_the_chosen_adapters(tiny_model_dir):
    module = build(RepresentationMisdirection, tiny_model_dir, lora=LORA, layer=1)
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    assert trainable and all(".mlp.down_proj.lora_" in n for n in trainable)
    assert {n.split(".layers.")[1][0] for n in trainable} == {"0", "1"}
    with pytest.raises(ValueError, match="lora.target_modules"):
        build(
            RepresentationMisdirection,
            tiny_model_dir,
            layer=1,
            lora={"r": 4, "target_modules": ["q_proj"]},
        )


@pytest.fixture(scope="module")
def dropout_model_dir(tmp_path_factory):
    """A tiny model whose attention drops half its weights in train mode (like GPT-2 / OPT)."""
    from lightning_unlearn.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("dropout"), attention_dropout=0.5)


REFERENCE_METHODS = [
    (GradientAscentKL, {}),
    (NegativePreferenceOptimization, {}),
    (UNDIAL, {}),
    (RepresentationMisdirection, {"layer": 1}),
]


@pytest.mark.parametrize(
    "cls, kwargs", REFERENCE_METHODS, ids=[c.__name__ for c, _ in REFERENCE_METHODS]
)
def test_lora_reference_forward_is_deterministic_under_dropout(
    cls, kwargs, dropout_model_dir, forget_batch
):
    """With adapters disabled the reference runs in eval mode: two calls give equal outputs while
    the model trains (dropout on), and every module's train/eval mode is restored after."""
    module = build(cls, dropout_model_dir, lora=LORA, **kwargs)
    module.train()
    modes = {n: m.training for n, m in module.named_modules()}
    reference = (
        module.reference_activations
        if isinstance(module, RepresentationMisdirection)
        else module.reference_logits
    )
    first, second = reference(forget_batch), reference(forget_batch)
    assert torch.equal(first, second)
    assert {n: m.training for n, m in module.named_modules()} == modes
    # dropout is really on in train mode: two training forwards differ
    with torch.no_grad():
        assert not torch.equal(module(forget_batch), module(forget_batch))
