"""The seven methods of the reference paper on a tiny random-initialised Llama model."""

from __future__ import annotations

import lightning as Lg
import pytest
import torch
from transformers import AutoModelForCausalLM

from lightning_unlearn import (
    AdversarialSamples,
    GradientAscent,
    GradientAscentDescent,
    GradientAscentKL,
    RandomLabels,
)
from lightning_unlearn.testing import build_method as build
from lightning_unlearn.testing import fit_on_batches as fit
from lightning_unlearn.testing import forget_nll as nll


def test_kl_is_zero_at_step_zero_and_positive_after_a_step(
    tiny_model_dir, forget_batch, retain_batch
):
    module = build(GradientAscentKL, tiny_model_dir, learning_rate=1e-2)
    assert module.retain_loss(retain_batch).item() == pytest.approx(0.0, abs=1e-7)
    fit(module, forget_batch, retain_batch, 1)
    assert module.retain_loss(retain_batch).item() > 1e-6
    # the reference is frozen and stays equal to the original weights
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    for (n, p), (_, q) in zip(module.reference.named_parameters(), original.named_parameters()):
        assert not p.requires_grad and torch.equal(p, q), n


def test_gradient_ascent_raises_forget_nll(trained_tiny_model_dir, forget_batch, retain_batch):
    module = build(GradientAscent, trained_tiny_model_dir, learning_rate=3e-3)
    before = nll(module, forget_batch)
    fit(module, forget_batch, retain_batch, 5)
    after = nll(module, forget_batch)
    assert after > before + 0.5, (before, after)


def gd_forget_floor(before: float) -> float:
    """Both GA and GA+GD must raise forget NLL by at least half a nat on this budget."""
    return before + 0.5


def test_ga_gd_keeps_retain_much_better_than_ga(trained_tiny_model_dir, forget_batch, retain_batch):
    ga = build(GradientAscent, trained_tiny_model_dir, learning_rate=3e-3)
    gd = build(GradientAscentDescent, trained_tiny_model_dir, learning_rate=3e-3)
    f0, r0 = nll(ga, forget_batch), nll(ga, retain_batch)
    fit(ga, forget_batch, retain_batch, 8)
    torch.manual_seed(0)
    fit(gd, forget_batch, retain_batch, 8)
    ga_forget, ga_retain = nll(ga, forget_batch), nll(ga, retain_batch)
    assert ga_forget > gd_forget_floor(f0), (f0, ga_forget)
    gd_forget, gd_retain = nll(gd, forget_batch), nll(gd, retain_batch)
    assert gd_forget > gd_forget_floor(f0), (f0, gd_forget)
    assert ga_retain - r0 > 0.5, (r0, ga_retain)
    assert gd_retain - r0 < 0.25 * (ga_retain - r0), (r0, ga_retain, gd_retain)


def test_adversarial_samples_targets_and_training(
    trained_tiny_model_dir, forget_batch, retain_batch
):
    module = build(AdversarialSamples, trained_tiny_model_dir, learning_rate=3e-3)
    targets = module.forget_targets(forget_batch)
    labels = forget_batch["labels"]
    real = labels[:, 1:] != -100
    assert (targets[:, 1:][real] != labels[:, 1:][real]).all()
    assert (targets[:, 1:][~real] == -100).all() and (targets[:, 0] == -100).all()
    before = nll(module, forget_batch)
    fit(module, forget_batch, retain_batch, 5)
    assert nll(module, forget_batch) > before


def test_random_labels_random_model_targets_are_that_models_next_token_distributions(
    trained_tiny_model_dir, forget_batch, retain_batch
):
    """Q at position t is the seeded random model's softmax at t (aligned like the logits), not
    the trained model's and not shifted; training moves the model towards it."""
    from lightning_unlearn.models import model_inputs, random_like

    module = build(RandomLabels, trained_tiny_model_dir, target="random_model", learning_rate=3e-3)
    q = module.forget_targets(forget_batch)
    # an independent copy of the random model, built the same way (same seed)
    other = random_like(module.hf_model, seed=module.random_seed).eval()
    with torch.no_grad():
        expected = torch.softmax(other(**model_inputs(forget_batch)).logits.float(), dim=-1)
        trained = torch.softmax(module.hf_model(**model_inputs(forget_batch)).logits, dim=-1)
    assert torch.allclose(q, expected, atol=1e-6)
    real = forget_batch["attention_mask"].bool()
    assert not torch.allclose(q[real], trained[real], atol=1e-3)  # not the trained model's
    assert not torch.allclose(q[:, 1:][real[:, 1:]], expected[:, :-1][real[:, 1:]], atol=1e-3)
    # training minimises CE(Q, P_theta): it falls from step to step
    loss_before = module.forget_loss(forget_batch).item()
    fit(module, forget_batch, retain_batch, 5)
    with torch.no_grad():
        assert module.forget_loss(forget_batch).item() < loss_before - 0.05


def test_random_labels_uniform_is_the_cross_entropy_to_uniform_and_falls(
    trained_tiny_model_dir, forget_batch, retain_batch
):
    """The forget term is -mean over target positions of mean_v log P_theta(v) (a loop over
    positions), and training lowers it: the predictions on forget text flatten towards uniform."""
    module = build(RandomLabels, trained_tiny_model_dir, target="uniform", learning_rate=3e-3)
    with torch.no_grad():
        logits = module(forget_batch).float()
    labels = forget_batch["labels"]
    terms = [
        -torch.log_softmax(logits[b, t], dim=-1).mean()
        for b in range(labels.size(0))
        for t in range(labels.size(1) - 1)
        if labels[b, t + 1] != -100
    ]
    expected = torch.stack(terms).mean().item()
    assert module.forget_loss(forget_batch).item() == pytest.approx(expected, rel=1e-5)
    before_nll = nll(module, forget_batch)
    fit(module, forget_batch, retain_batch, 5)
    with torch.no_grad():
        after = module.forget_loss(forget_batch).item()
    assert after < expected - 0.05, (expected, after)
    assert nll(module, forget_batch) > before_nll


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
def test_unknown_method_option_is_named(tiny_model_dir):
    with pytest.raises(TypeError, match="forget_wieght"):
        GradientAscent(str(tiny_model_dir), forget_wieght=1.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"learning_rate": 0.0}, "learning_rate must be > 0"),
        ({"retain_weight": -1.0}, "retain_weight must be >= 0"),
        ({"scheduler": "linear"}, "scheduler must be"),
        ({"warmup_ratio": 1.5}, "warmup_ratio"),
    ],
)
def test_bad_hyper_parameters(tiny_model_dir, kwargs, match):
    with pytest.raises(ValueError, match=match):
        GradientAscentDescent(str(tiny_model_dir), **kwargs)


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


@pytest.mark.parametrize("lora", [None, {"r": 4, "alpha": 8}])
def test_kl_retain_term_from_hidden_states_equals_the_logits_formula(
    lora, trained_tiny_model_dir, tiny_model_dir, retain_batch
):
    """GA+KL's retain term (from hidden states, no full logits held) has the value and the
    parameter gradients of kl_to_reference on the two models' logits."""
    from lightning_unlearn.losses import kl_to_reference

    # the trained model differs from its reference: a reference of other weights, or LoRA moved
    module = build(GradientAscentKL, trained_tiny_model_dir, lora=lora,
                   reference_model_name_or_path=None if lora else str(tiny_model_dir))  # fmt: skip
    if lora:
        with torch.no_grad():
            for name, p in module.model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
    assert module._output_layers() is not None  # the hidden-state path is taken
    params = [p for p in module.parameters() if p.requires_grad]
    fused = module.retain_loss(retain_batch)
    fused_grads = torch.autograd.grad(fused, params)
    plain = kl_to_reference(module(retain_batch), module.reference_logits(retain_batch),
                            retain_batch["labels"])  # fmt: skip
    plain_grads = torch.autograd.grad(plain, params)
    assert fused.item() == pytest.approx(plain.item(), rel=1e-5) and fused.item() > 1e-3
    for a, b in zip(fused_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
