"""What the base class :class:`UnlearningModule` does for every method: it logs the loss terms,
exports the model, schedules the learning rate, names bad input, and computes the KL retain term
from hidden states (no full logits held) where the architecture allows."""

from __future__ import annotations

import lightning as Lg
import pytest
import torch
from transformers import AutoModelForCausalLM

from lightning_unlearn import GradientAscent, GradientAscentDescent, GradientAscentKL
from lightning_unlearn.testing import build_method as build
from lightning_unlearn.testing import fit_on_batches as fit


def test_losses_are_logged(tiny_model_dir, forget_batch, retain_batch):
    module = build(GradientAscentDescent, tiny_model_dir, learning_rate=1e-3)
    trainer = fit(module, forget_batch, retain_batch, 2)
    logged = trainer.callback_metrics
    assert {"train/forget_loss", "train/retain_loss", "train/loss"} <= set(logged)
    total = (
        module.forget_weight * logged["train/forget_loss"]
        + module.retain_weight * logged["train/retain_loss"]
    )
    assert logged["train/loss"].item() == pytest.approx(total.item(), rel=1e-5)


def test_export_reloads_equal_weights(tiny_model_dir, forget_batch, retain_batch, tmp_path):
    module = build(GradientAscent, tiny_model_dir, learning_rate=1e-2)
    fit(module, forget_batch, retain_batch, 2)
    out = module.export(tmp_path / "unlearned")
    assert any(out.glob("*.safetensors")) and not any(out.glob("*.bin"))
    assert (out / "tokenizer.json").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    trained = module.hf_model.state_dict()
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, trained[name]), name
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert not torch.equal(original.model.embed_tokens.weight, reloaded.model.embed_tokens.weight)


def test_scheduler_warmup_then_cosine(tiny_model_dir, forget_batch, retain_batch):
    module = build(
        GradientAscent, tiny_model_dir, learning_rate=1e-3, warmup_ratio=0.25, scheduler="cosine"
    )
    lrs = []

    class Record(Lg.Callback):
        def on_train_batch_start(self, trainer, *a):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    fit(module, forget_batch, None, 8, callbacks=[Record()])
    assert lrs[0] == pytest.approx(0.5e-3) and lrs[1] == pytest.approx(1e-3)
    assert lrs[2] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:])) and lrs[-1] < 0.2e-3


# ----------------------------------------------------------------------------- bad input
def test_forget_batch_without_targets(tiny_model_dir, forget_batch):
    module = build(GradientAscent, tiny_model_dir)
    empty = dict(forget_batch, labels=torch.full_like(forget_batch["labels"], -100))
    with pytest.raises(ValueError, match="forget batch has no real target tokens"):
        module.training_step({"forget": empty}, 0)


def test_missing_model_path(tmp_path):
    module = GradientAscent(str(tmp_path / "no-such-model"))
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        module.configure_model()


def test_retain_method_without_retain_data(tiny_model_dir, forget_batch):
    module = build(GradientAscentDescent, tiny_model_dir)
    with pytest.raises(ValueError, match="needs retain data"):
        module.training_step({"forget": forget_batch}, 0)


# ----------------------------------------------------------------------------- the KL fast path
@pytest.mark.parametrize("lora", [None, {"r": 4, "alpha": 8}])
def test_kl_retain_term_from_hidden_states_equals_the_logits_formula(
    lora, trained_tiny_model_dir, tiny_model_dir, retain_batch
):
    """GA+KL's retain term (from hidden states, no full logits held) has the value and the
    parameter gradients of kl_to_reference on the two models' logits."""
    from lightning_unlearn.losses import kl_to_reference

    # the trained model differs from its reference: a reference of other weights, or LoRA moved
    reference = None if lora else str(tiny_model_dir)
    module = build(
        GradientAscentKL, trained_tiny_model_dir, lora=lora, reference_model_name_or_path=reference
    )
    if lora:
        with torch.no_grad():
            for name, p in module.model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
    assert module._output_layers() is not None  # the hidden-state path is taken
    params = [p for p in module.parameters() if p.requires_grad]
    fused = module.retain_loss(retain_batch)
    fused_grads = torch.autograd.grad(fused, params)
    logits, reference_logits = module(retain_batch), module.reference_logits(retain_batch)
    plain = kl_to_reference(logits, reference_logits, retain_batch["labels"])
    plain_grads = torch.autograd.grad(plain, params)
    assert fused.item() == pytest.approx(plain.item(), rel=1e-5) and fused.item() > 1e-3
    for a, b in zip(fused_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
