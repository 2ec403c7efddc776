"""Methods from the wider literature: NPO, SimNPO, RMU, UNDIAL, Who's Harry Potter, DPO.

Each loss is checked against its paper's formula computed independently (plain Python math on
small tensors); each method is run for a few steps on a tiny model that memorised the forget set.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from lightning_unlearn import (
    UNDIAL,
    NegativePreferenceOptimization,
    PreferenceUnlearning,
    RepresentationMisdirection,
    SimNPO,
    WhosHarryPotter,
)
from lightning_unlearn.losses import (
    activation_mse,
    argmax_labels,
    dpo_loss,
    npo_loss,
    retain_term_loss,
    sequence_logprob,
    simnpo_loss,
    target_counts,
    undial_target_logits,
    whp_generic_logits,
)
from lightning_unlearn.methods.rmu import decoder_layers, steering_vector
from lightning_unlearn.methods.whos_harry_potter import load_anchored_terms, translate_tokens
from lightning_unlearn.testing import build_method as build
from lightning_unlearn.testing import fit_on_batches as fit
from lightning_unlearn.testing import forget_nll as nll

# ----------------------------------------------------------------------------- helpers


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


# ----------------------------------------------------------------------------- loss formulas
LOGPROB = [-3.0, -12.5, -0.25]
REF_LOGPROB = [-4.0, -10.0, -0.25]


@pytest.mark.parametrize("beta", [0.1, 1.0, 2.5])
def test_npo_loss_is_the_paper_formula(beta):
    expected = sum(
        -2.0 / beta * _log_sigmoid(-beta * (lp - ref)) for lp, ref in zip(LOGPROB, REF_LOGPROB)
    ) / len(LOGPROB)
    got = npo_loss(torch.tensor(LOGPROB), torch.tensor(REF_LOGPROB), beta=beta)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_npo_gradient_tends_to_gradient_ascent_as_beta_goes_to_zero():
    logprob = torch.tensor(LOGPROB, dtype=torch.float64, requires_grad=True)
    ref = torch.tensor(REF_LOGPROB, dtype=torch.float64)
    # gradient ascent minimises E[log pi(y)]: its gradient w.r.t. each log pi(y) is 1/n
    ga_grad = torch.full((3,), 1 / 3, dtype=torch.float64)
    gaps = []
    for beta in (1.0, 1e-1, 1e-2, 1e-4):
        (grad,) = torch.autograd.grad(npo_loss(logprob, ref, beta=beta), logprob)
        # analytic derivative 2 * sigmoid(beta * log_ratio) / n ...
        ratio = [lp - r for lp, r in zip(LOGPROB, REF_LOGPROB)]
        analytic = [2 / (1 + math.exp(-beta * x)) / 3 for x in ratio]
        assert grad.tolist() == pytest.approx(analytic, rel=1e-9)
        # ... and a central finite difference agree
        eps = 1e-6
        bump = torch.zeros(3, dtype=torch.float64)
        bump[1] = eps
        numeric = (
            npo_loss(logprob.detach() + bump, ref, beta=beta)
            - npo_loss(logprob.detach() - bump, ref, beta=beta)
        ) / (2 * eps)
        assert numeric.item() == pytest.approx(grad[1].item(), rel=1e-4)
        gaps.append((grad - ga_grad).abs().max().item())
    assert gaps == sorted(gaps, reverse=True) and gaps[0] > 0.05
    assert gaps[-1] < 1e-4


def test_npo_small_beta_matches_gradient_ascent_through_logits():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[1, 2, 3, 4, -100], [5, 6, 0, 1, 2]])
    ref = sequence_logprob(torch.randn(2, 5, 7, dtype=torch.float64), labels)
    (npo_grad,) = torch.autograd.grad(
        npo_loss(sequence_logprob(logits, labels), ref, beta=1e-6), logits
    )
    (ga_grad,) = torch.autograd.grad(sequence_logprob(logits, labels).mean(), logits)
    assert ga_grad.abs().max() > 0.1
    assert torch.allclose(npo_grad, ga_grad, atol=1e-6)


@pytest.mark.parametrize("beta, delta", [(2.5, 0.0), (1.0, 0.5), (4.5, -1.0)])
def test_simnpo_loss_is_the_paper_formula(beta, delta):
    lengths = [3, 25, 1]
    expected = (
        sum(-2.0 / beta * _log_sigmoid(-beta / n * lp - delta) for lp, n in zip(LOGPROB, lengths))
        / 3
    )
    got = simnpo_loss(torch.tensor(LOGPROB), torch.tensor(lengths), beta=beta, delta=delta)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_target_counts_are_real_next_tokens():
    labels = torch.tensor([[5, 6, 7, -100], [1, -100, -100, -100], [-100, 2, 3, 4]])
    assert target_counts(labels).tolist() == [2, 0, 3]


def test_dpo_loss_is_the_paper_formula():
    chosen, rejected = [-5.0, -2.0], [-1.0, -9.0]
    ref_chosen, ref_rejected = [-6.0, -2.5], [-0.5, -8.0]
    beta = 0.1
    expected = (
        -sum(
            _log_sigmoid(beta * ((c - rc) - (r - rr)))
            for c, r, rc, rr in zip(chosen, rejected, ref_chosen, ref_rejected)
        )
        / 2
    )
    got = dpo_loss(*map(torch.tensor, (chosen, rejected, ref_chosen, ref_rejected)), beta=beta)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_whp_generic_logits_is_the_paper_formula():
    base = torch.tensor([[[1.0, 2.0, -1.0]]])
    reinforced = torch.tensor([[[3.0, 1.0, -1.0]]])
    # v_b - alpha * relu(v_r - v_b): only the first logit was boosted (by 2)
    got = whp_generic_logits(base, reinforced, alpha=5.0)
    assert got.tolist() == [[[1.0 - 5.0 * 2.0, 2.0, -1.0]]]
    assert torch.equal(whp_generic_logits(base, reinforced, alpha=0.0), base)


def test_undial_target_lowers_only_the_true_next_token():
    ref = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)
    labels = torch.tensor([[0, 2, 1], [0, 3, -100]])
    got = undial_target_logits(ref, labels, strength=10.0)
    expected = ref.clone()
    for b in range(2):
        for t in range(2):
            if labels[b, t + 1] != -100:
                expected[b, t, labels[b, t + 1]] -= 10.0
    assert torch.equal(got, expected)
    assert (got != ref).sum().item() == 3


def test_activation_mse_matches_mse_loss_and_masks_padding():
    torch.manual_seed(0)
    acts, target = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    assert activation_mse(acts, target, None).item() == pytest.approx(
        F.mse_loss(acts, target).item(), rel=1e-6
    )
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    per_token = [
        ((acts[b, t] - target[b, t]) ** 2).mean().item() for b, t in [(0, 0), (0, 1), (1, 0)]
    ]
    assert activation_mse(acts, target, mask).item() == pytest.approx(sum(per_token) / 3, rel=1e-6)


def test_argmax_labels_and_retain_terms():
    logits = torch.tensor([[[0.0, 3.0, 1.0], [2.0, 0.0, 1.0], [0.0, 0.0, 9.0]]])
    labels = torch.tensor([[0, 2, -100]])
    assert argmax_labels(logits, labels).tolist() == [[-100, 1, -100]]
    assert retain_term_loss("kl", logits, labels, logits).item() == pytest.approx(0.0, abs=1e-7)
    assert retain_term_loss("nll", logits, labels).item() == pytest.approx(
        -F.log_softmax(logits[0, 0], -1)[2].item()
    )
    with pytest.raises(ValueError, match="needs the reference"):
        retain_term_loss("kl", logits, labels)


def test_rmu_steering_vector_is_a_seeded_scaled_unit_vector():
    v = steering_vector(16, coefficient=6.5, seed=3)
    assert v.norm().item() == pytest.approx(6.5, rel=1e-6)
    assert (v >= 0).all()
    assert torch.equal(v, steering_vector(16, coefficient=6.5, seed=3))
    assert not torch.equal(v, steering_vector(16, coefficient=6.5, seed=4))


def test_translate_tokens_aligns_on_left_context():
    ids = torch.tensor([[5, 7, 8, 9, 5, 0], [7, 8, 7, 8, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]])
    new_ids, new_mask, index = translate_tokens(ids, mask, [([7, 8], [4])])
    assert new_ids.tolist() == [[5, 4, 9, 5], [4, 4, 0, 0]]
    assert new_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    # inside a term (its first token) -> -1; a term's last token -> the replacement's last token
    assert index.tolist() == [[0, -1, 1, 2, 3, -1], [-1, 0, -1, 1, -1, -1]]


# ----------------------------------------------------------------------------- methods
def test_npo_reduces_forget_likelihood(trained_tiny_model_dir, forget_batch, retain_batch):
    module = build(NegativePreferenceOptimization, trained_tiny_model_dir, learning_rate=3e-3)
    assert module.reference is not None and not module.uses_retain
    # at step zero the policy equals the reference: loss = (2/beta) log 2 exactly
    expected = 2 / module.beta * math.log(2)
    assert module.forget_loss(forget_batch).item() == pytest.approx(expected, rel=1e-5)
    before = nll(module, forget_batch)
    fit(module, forget_batch, retain_batch, 5)
    assert nll(module, forget_batch) > before + 0.5


def test_npo_retain_term_switches_retain_on(tiny_model_dir, retain_batch):
    module = build(NegativePreferenceOptimization, tiny_model_dir, retain_term="kl")
    assert module.uses_retain
    assert module.retain_loss(retain_batch).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="retain_term must be one of"):
        NegativePreferenceOptimization(str(tiny_model_dir), retain_term="l2")


def test_simnpo_is_reference_free_and_reduces_forget_likelihood(
    trained_tiny_model_dir, forget_batch, retain_batch
):
    module = build(SimNPO, trained_tiny_model_dir, learning_rate=3e-3)
    assert module.reference is None and module.uses_retain
    before, retain_before = nll(module, forget_batch), nll(module, retain_batch)
    fit(module, forget_batch, retain_batch, 5)
    assert nll(module, forget_batch) > before + 0.5
    assert nll(module, retain_batch) < retain_before + 0.5
    assert build(SimNPO, trained_tiny_model_dir, retain_term="kl").reference is not None


def test_undial_reduces_forget_likelihood(trained_tiny_model_dir, forget_batch, retain_batch):
    module = build(UNDIAL, trained_tiny_model_dir, learning_rate=3e-3, strength=10.0)
    target = module.forget_targets(forget_batch)
    reference = module.reference_logits(forget_batch)
    assert (reference - target).sum().item() == pytest.approx(
        10.0 * target_counts(forget_batch["labels"]).sum().item(), rel=1e-5
    )
    before = nll(module, forget_batch)
    fit(module, forget_batch, retain_batch, 5)
    assert nll(module, forget_batch) > before + 0.5


def test_rmu_steers_forget_activations_and_trains_only_chosen_layers(
    trained_tiny_model_dir, forget_batch, retain_batch
):
    module = build(
        RepresentationMisdirection,
        trained_tiny_model_dir,
        learning_rate=3e-2,
        layer=1,
        steering_coefficient=20.0,
        retain_weight=1.0,
    )
    assert module.trainable_layers == [0, 1]
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    assert trainable == {f"model.layers.{i}.mlp.down_proj.weight" for i in (0, 1)}
    before = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    with torch.no_grad():
        dist_before = module.forget_loss(forget_batch).item()
        assert module.retain_loss(retain_batch).item() == pytest.approx(0.0, abs=1e-8)
    nll_before = nll(module, forget_batch)
    fit(module, forget_batch, retain_batch, 5)
    with torch.no_grad():
        assert module.forget_loss(forget_batch).item() < dist_before - 1.0
    assert nll(module, forget_batch) > nll_before + 0.5
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


def test_whos_harry_potter_reinforces_then_unlearns(
    trained_tiny_model_dir, forget_batch, retain_batch
):
    module = build(
        WhosHarryPotter,
        trained_tiny_model_dir,
        learning_rate=3e-3,
        reinforce_steps=10,
        reinforce_lr=1e-2,
    )
    with pytest.raises(RuntimeError, match="no reinforced model"):
        module.forget_loss(forget_batch)
    before = nll(module, forget_batch)
    fit(module, forget_batch, retain_batch, 5)
    reinforced = module.reinforced
    assert reinforced is not None and not any(p.requires_grad for p in reinforced.parameters())
    # the reinforced model was trained further on the forget set: new weights, still memorised
    assert not torch.equal(next(reinforced.parameters()), next(module.reference.parameters()))
    with torch.no_grad():
        from lightning_unlearn.losses import token_nll

        assert token_nll(module.reinforced_logits(forget_batch), forget_batch["labels"]) < 0.1
    assert nll(module, forget_batch) > before + 0.3
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


def test_preference_unlearning_prefers_the_refusal(
    trained_tiny_model_dir, forget_batch, retain_batch
):
    module = build(
        PreferenceUnlearning, trained_tiny_model_dir, learning_rate=3e-3, prompt_tokens=4
    )
    chosen, rejected = module.preference_pair(forget_batch)
    assert module.forget_loss(forget_batch).item() == pytest.approx(math.log(2), rel=1e-5)

    def margin():
        with torch.no_grad():
            return (
                (
                    sequence_logprob(module(chosen), chosen["labels"])
                    - sequence_logprob(module(rejected), rejected["labels"])
                )
                .mean()
                .item()
            )

    m0, before = margin(), nll(module, forget_batch)
    fit(module, forget_batch, retain_batch, 5)
    assert margin() > m0 + 5.0
    assert nll(module, forget_batch) > before + 0.3


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


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (NegativePreferenceOptimization, {"beta": 0.0}, "beta must be > 0"),
        (SimNPO, {"beta": -1.0}, "beta must be > 0"),
        (UNDIAL, {"strength": -1.0}, "strength must be >= 0"),
        (RepresentationMisdirection, {"steering_coefficient": 0.0}, "steering_coefficient"),
        (WhosHarryPotter, {"target": "argmax"}, "target must be 'hard' or 'soft'"),
        (WhosHarryPotter, {"reinforce_steps": 0}, "reinforce_steps must be >= 1"),
        (PreferenceUnlearning, {"alternative": "idk"}, "alternative must be"),
        (PreferenceUnlearning, {"prompt_tokens": 0}, "prompt_tokens must be >= 1"),
    ],
)
def test_bad_hyper_parameters_are_named(tiny_model_dir, cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(str(tiny_model_dir), **kwargs)
