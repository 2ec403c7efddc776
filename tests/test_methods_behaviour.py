"""What is particular to each method, on a tiny Llama model.

The method table (``test_methods_contract.py``) checks what every method promises; here are each
method's own targets, terms and options. Where a check needs a trained method it reads the table's
shared run, ``unlearned(name)``: ``run.initial`` before training, ``run.module`` after it.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from lightning_unlearn import (
    AdversarialSamples,
    GradientAscent,
    GradientAscentDescent,
    NegativePreferenceOptimization,
    PreferenceUnlearning,
    RandomLabels,
    RepresentationMisdirection,
    SimNPO,
    WhosHarryPotter,
)
from lightning_unlearn.losses import sequence_logprob, target_counts, token_nll, whp_generic_logits
from lightning_unlearn.methods.rmu import decoder_layers, steering_vector
from lightning_unlearn.methods.whos_harry_potter import load_anchored_terms
from lightning_unlearn.testing import build_method as build
from lightning_unlearn.testing import fit_on_batches as fit
from lightning_unlearn.testing import forget_nll as nll


# ----------------------------------------------------------------------------- GA, GA+GD, GA+KL
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


def test_kl_is_zero_at_step_zero_and_positive_after_a_step(
    unlearned, trained_tiny_model_dir, retain_batch
):
    run = unlearned("ga_kl")
    assert run.initial.retain_loss(retain_batch).item() == pytest.approx(0.0, abs=1e-7)
    assert run.module.retain_loss(retain_batch).item() > 1e-6
    # the reference is frozen and stays equal to the original weights
    original = AutoModelForCausalLM.from_pretrained(trained_tiny_model_dir)
    for (n, p), (_, q) in zip(run.module.reference.named_parameters(), original.named_parameters()):
        assert not p.requires_grad and torch.equal(p, q), n


# ----------------------------------------------------------------------------- AS, RL
def test_adversarial_samples_targets(trained_tiny_model_dir, forget_batch):
    module = build(AdversarialSamples, trained_tiny_model_dir)
    targets = module.forget_targets(forget_batch)
    labels = forget_batch["labels"]
    real = labels[:, 1:] != -100
    assert (targets[:, 1:][real] != labels[:, 1:][real]).all()
    assert (targets[:, 1:][~real] == -100).all() and (targets[:, 0] == -100).all()


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


def test_random_labels_uniform_is_the_cross_entropy_to_uniform_and_falls(unlearned, forget_batch):
    """The forget term is -mean over target positions of mean_v log P_theta(v) (a loop over
    positions), and training lowers it: the predictions on forget text flatten towards uniform
    (and the forget NLL rises: test_methods_contract.py)."""
    run = unlearned("rl")
    assert run.module.hparams["target"] == "uniform"
    with torch.no_grad():
        logits = run.initial(forget_batch).float()
    labels = forget_batch["labels"]
    terms = [
        -torch.log_softmax(logits[b, t], dim=-1).mean()
        for b in range(labels.size(0))
        for t in range(labels.size(1) - 1)
        if labels[b, t + 1] != -100
    ]
    expected = torch.stack(terms).mean().item()
    assert run.initial.forget_loss(forget_batch).item() == pytest.approx(expected, rel=1e-5)
    with torch.no_grad():
        after = run.module.forget_loss(forget_batch).item()
    assert after < expected - 0.05, (expected, after)


# ----------------------------------------------------------------------------- NPO, SimNPO, UNDIAL
def test_npo_starts_at_2_log_2_over_beta(unlearned, forget_batch):
    module = unlearned("npo").initial
    assert module.reference is not None and not module.uses_retain
    # at step zero the policy equals the reference: loss = (2/beta) log 2 exactly
    expected = 2 / module.beta * math.log(2)
    assert module.forget_loss(forget_batch).item() == pytest.approx(expected, rel=1e-5)


def test_npo_retain_term_switches_retain_on(tiny_model_dir, retain_batch):
    module = build(NegativePreferenceOptimization, tiny_model_dir, retain_term="kl")
    assert module.uses_retain
    assert module.retain_loss(retain_batch).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="retain_term must be one of"):
        NegativePreferenceOptimization(str(tiny_model_dir), retain_term="l2")


def test_simnpo_is_reference_free_and_keeps_retain(unlearned, trained_tiny_model_dir, retain_batch):
    run = unlearned("simnpo")
    assert run.module.reference is None and run.module.uses_retain
    assert nll(run.module, retain_batch) < nll(run.initial, retain_batch) + 0.5
    assert build(SimNPO, trained_tiny_model_dir, retain_term="kl").reference is not None


def test_undial_target_is_the_reference_less_strength_on_the_true_token(unlearned, forget_batch):
    module = unlearned("undial").initial
    assert module.hparams["strength"] == 10.0
    target = module.forget_targets(forget_batch)
    reference = module.reference_logits(forget_batch)
    assert (reference - target).sum().item() == pytest.approx(
        10.0 * target_counts(forget_batch["labels"]).sum().item(), rel=1e-5
    )


# ----------------------------------------------------------------------------- RMU
def test_rmu_steers_forget_activations_and_trains_only_chosen_layers(
    unlearned, forget_batch, retain_batch
):
    run = unlearned("rmu")
    module, initial = run.module, run.initial
    assert (module.hparams["layer"], module.hparams["steering_coefficient"]) == (1, 20.0)
    assert module.trainable_layers == [0, 1]
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    assert trainable == {f"model.layers.{i}.mlp.down_proj.weight" for i in (0, 1)}
    before = dict(initial.model.named_parameters())
    with torch.no_grad():
        dist_before = initial.forget_loss(forget_batch).item()
        assert initial.retain_loss(retain_batch).item() == pytest.approx(0.0, abs=1e-8)
        assert module.forget_loss(forget_batch).item() < dist_before - 1.0
    for name, p in module.model.named_parameters():
        assert torch.equal(p, before[name]) == (name not in trainable), name
    # the hooked output is the residual stream after layer 1; transformers reports the last
    # layer's hidden state after the final norm
    inputs = {k: forget_batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        states = module.hf_model(**inputs, output_hidden_states=True).hidden_states
        acts = module.activations(forget_batch)
    assert torch.allclose(module.hf_model.model.norm(acts), states[2], atol=1e-5)
    assert not torch.allclose(acts, states[1], atol=1e-3)


def test_rmu_direction_per_part_steers_each_part_to_its_own_direction(tiny_model_dir, forget_batch):
    """The WMDP code steers each forget corpus to a random direction of its own; with
    direction_per_part a batch's ``part`` picks each row's direction (part 0 is ``u``)."""
    kw = dict(layer=1, steering_coefficient=6.5, seed=3)
    per_part = build(RepresentationMisdirection, tiny_model_dir, direction_per_part=True, **kw)
    single = build(RepresentationMisdirection, tiny_model_dir, **kw)
    hidden = per_part.hf_model.config.hidden_size
    u = [steering_vector(hidden, coefficient=6.5, seed=3 + k) for k in (0, 1)]
    assert torch.equal(u[0], per_part.steering) and not torch.allclose(u[0], u[1])
    assert u[1].norm().item() == pytest.approx(6.5, rel=1e-5)
    parts = torch.tensor([1, 0, 1, 0])
    batch = {**forget_batch, "part": parts}
    with torch.no_grad():
        acts = per_part.activations(forget_batch)
        mask = forget_batch["attention_mask"].float()
        sq = torch.stack([(acts[i] - u[int(k)]).square().mean(-1) for i, k in enumerate(parts)])
        expected = ((sq * mask).sum() / mask.sum()).item()
        assert per_part.forget_loss(batch).item() == pytest.approx(expected, rel=1e-6)
        # without parts, or without the option, every row goes to u
        assert per_part.forget_loss(forget_batch).item() == pytest.approx(
            single.forget_loss(batch).item(), rel=1e-6
        )
        # (random positive directions are close: cosine ~0.75, so the losses differ a little)
        assert abs(per_part.forget_loss(forget_batch).item() - expected) > 1e-4


def test_rmu_bad_layer_is_named(tiny_model_dir):
    with pytest.raises(ValueError, match=r"layer indices \[5\].*2 decoder layers"):
        build(RepresentationMisdirection, tiny_model_dir, layer=5, trainable_layers=[1])
    assert len(decoder_layers(build(NegativePreferenceOptimization, tiny_model_dir).hf_model)) == 2


# ----------------------------------------------------------------------------- Who's Harry Potter
def test_whos_harry_potter_reinforces_then_unlearns(
    unlearned, trained_tiny_model_dir, forget_batch
):
    run = unlearned("whp")
    module = run.module
    with pytest.raises(RuntimeError, match="no reinforced model"):
        run.initial.forget_loss(forget_batch)
    reinforced = module.reinforced
    assert reinforced is not None and not any(p.requires_grad for p in reinforced.parameters())
    # the reinforced model was trained further on the forget set: new weights, still memorised
    assert not torch.equal(next(reinforced.parameters()), next(module.reference.parameters()))
    with torch.no_grad():
        assert token_nll(module.reinforced_logits(forget_batch), forget_batch["labels"]) < 0.1
    generic, labels = module.forget_targets(forget_batch)
    # eq. 1 written out on logits computed here: the untouched original from disk (v_b) and the
    # reinforced model (v_r); v_generic = v_b - alpha * relu(v_r - v_b)
    original = AutoModelForCausalLM.from_pretrained(trained_tiny_model_dir).eval()
    inputs = {k: forget_batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        v_b = original(**inputs).logits.float()
        v_r = reinforced(**inputs).logits.float()
    expected = v_b - 5.0 * torch.clamp(v_r - v_b, min=0.0)
    assert torch.allclose(generic, expected, atol=1e-4)
    assert not torch.allclose(generic, v_b, atol=1e-2)  # the reinforced boost was subtracted
    assert torch.equal(labels, forget_batch["labels"])


def test_whos_harry_potter_refuses_to_reinforce_a_zero3_sharded_model(tiny_model_dir, forget_batch):
    module = build(WhosHarryPotter, tiny_model_dir, reinforce_steps=1)
    for p in module.reference.parameters():
        p.ds_id = 0  # what DeepSpeed ZeRO-3 puts on every partitioned parameter
    with pytest.raises(RuntimeError, match="inside a DeepSpeed ZeRO-3 run.*reinforced_model="):
        module.reinforce([forget_batch])
    assert module.reinforced is None


def test_whos_harry_potter_anchored_terms(tiny_model_dir, tiny_tokenizer, forget_batch, tmp_path):
    terms = tmp_path / "anchors.json"
    terms.write_text(json.dumps({"Stack": "Queue", "print": "show"}))
    module = build(WhosHarryPotter, tiny_model_dir, anchored_terms=str(terms), reinforce_steps=1)
    module.reinforce([forget_batch])
    translated, index = module.translate(forget_batch)
    text = [
        tiny_tokenizer.decode(r[m.bool()])
        for r, m in zip(translated["input_ids"], translated["attention_mask"])
    ]
    assert "class Queue:" in text[1] and "Stack" not in text[1]
    assert "show(i * i)" in text[2] and "print" not in text[2]
    generic, labels = module.forget_targets(forget_batch)
    # position before a term: target is the generic prediction on the translated text there
    full = whp_generic_logits(
        module.reference_logits(translated), module.reinforced_logits(translated), alpha=5.0
    )
    for b in range(forget_batch["input_ids"].size(0)):
        for t in range(forget_batch["input_ids"].size(1) - 1):
            j = index[b, t].item()
            if j >= 0:
                assert torch.allclose(generic[b, t], full[b, j]), (b, t)
            else:
                assert labels[b, t + 1].item() == -100
    assert (index[1] < 0).sum().item() >= 1  # "Stack" has more than one token in the tiny BPE


def test_whos_harry_potter_bad_anchored_terms(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(["Stack"]))
    with pytest.raises(ValueError, match="non-empty JSON object"):
        load_anchored_terms(bad)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        WhosHarryPotter(str(tiny_model_dir), anchored_terms=str(tmp_path / "nope.json"))


# ----------------------------------------------------------------------------- DPO
def test_preference_pairs(tiny_model_dir, tiny_tokenizer, forget_batch):
    module = build(PreferenceUnlearning, tiny_model_dir, prompt_tokens=4)
    chosen, rejected = module.preference_pair(forget_batch)
    refusal = tiny_tokenizer.encode(" I'm sorry, I don't know that.") + [
        tiny_tokenizer.eos_token_id
    ]
    for b in range(forget_batch["input_ids"].size(0)):
        n = int(chosen["attention_mask"][b].sum())
        assert chosen["input_ids"][b, :4].tolist() == forget_batch["input_ids"][b, :4].tolist()
        assert chosen["input_ids"][b, 4:n].tolist() == refusal
        assert (chosen["labels"][b, :4] == -100).all() and (rejected["labels"][b, :4] == -100).all()
        assert chosen["labels"][b, 4:n].tolist() == refusal
    assert torch.equal(rejected["labels"][:, 4:], forget_batch["labels"][:, 4:])


def test_preference_unlearning_prefers_the_refusal(unlearned, forget_batch):
    run = unlearned("dpo")
    assert run.module.hparams["prompt_tokens"] == 4
    chosen, rejected = run.initial.preference_pair(forget_batch)
    assert run.initial.forget_loss(forget_batch).item() == pytest.approx(math.log(2), rel=1e-5)

    def margin(module):
        with torch.no_grad():
            return (
                (
                    sequence_logprob(module(chosen), chosen["labels"])
                    - sequence_logprob(module(rejected), rejected["labels"])
                )
                .mean()
                .item()
            )

    assert margin(run.module) > margin(run.initial) + 5.0


def test_preference_random_model_alternative(tiny_model_dir, forget_batch):
    module = build(
        PreferenceUnlearning,
        tiny_model_dir,
        prompt_tokens=4,
        alternative="random_model",
        max_alternative_tokens=6,
    )
    chosen, _ = module.preference_pair(forget_batch)
    assert module.random_model is not None
    answer_lengths = (chosen["labels"] != -100).sum(1)
    assert ((answer_lengths >= 1) & (answer_lengths <= 6)).all()
    assert torch.equal(chosen["input_ids"][:, :4], forget_batch["input_ids"][:, :4])
    again, _ = module.preference_pair(forget_batch)
    assert torch.equal(again["input_ids"], chosen["input_ids"])  # seeded


def test_packed_batches_are_refused_where_a_row_must_be_one_document(tiny_model_dir, forget_batch):
    packed = dict(
        forget_batch,
        position_ids=torch.arange(forget_batch["input_ids"].size(1)).expand_as(
            forget_batch["input_ids"]
        ),
    )
    module = build(PreferenceUnlearning, tiny_model_dir)
    with pytest.raises(ValueError, match="position_ids"):
        module.preference_pair(packed)


# ----------------------------------------------------------------------------- WGA, CE-U
def test_wga_keeps_the_retain_term_and_needs_no_reference(unlearned):
    module = unlearned("wga").module
    assert module.uses_retain and module.reference is None


def test_ce_u_has_no_retain_term(unlearned):
    assert not unlearned("ce_u").module.uses_retain
