"""The methods' loss formulas, without a model.

Each loss is checked against its paper's formula computed independently (plain Python math on
small tensors, or a plain Python loop over positions), and the 2025 methods' gradients against
the analytic ones with the token weights / targets held constant.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_unlearn.losses import (
    activation_mse,
    argmax_labels,
    ce_u_loss,
    dpo_loss,
    dual_update,
    logit_flatness,
    npo_loss,
    retain_term_loss,
    satimp_loss,
    sequence_logprob,
    simnpo_loss,
    target_counts,
    token_nll,
    undial_target_logits,
    wga_loss,
    whp_generic_logits,
)
from lightning_unlearn.methods.rmu import steering_vector
from lightning_unlearn.methods.whos_harry_potter import translate_tokens

# ----------------------------------------------------------------------------- helpers


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def random_case(seed: int = 0, vocab: int = 7):
    """Random float64 logits ``[3, 6, vocab]`` and labels with padding, a hole and a short row."""
    g = torch.Generator().manual_seed(seed)
    logits = 3.0 * torch.randn(3, 6, vocab, generator=g, dtype=torch.float64)
    labels = torch.randint(0, vocab, (3, 6), generator=g)
    labels[0, 4:] = -100  # right padding
    labels[1, 0] = -100  # a prompt token
    labels[1, 3] = -100  # a hole in the middle
    labels[2, :3] = -100  # only three targets
    return logits, labels


def targets(labels):
    """``(b, t, y)`` for every real target: the prediction at ``t`` of the token at ``t + 1``."""
    rows, width = labels.shape
    return [
        (b, t, int(labels[b, t + 1]))
        for b in range(rows)
        for t in range(width - 1)
        if labels[b, t + 1] != -100
    ]


def ce(row, y: int) -> float:
    """Cross-entropy of token ``y`` under the logits ``row``, in plain Python."""
    z = [float(v) for v in row]
    top = max(z)
    return top + math.log(sum(math.exp(v - top) for v in z)) - z[y]


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


# ----------------------------------------------------------------------------- 2025 formulas
@pytest.mark.parametrize("beta", [0.0, 1.0, 2.5])
def test_wga_loss_is_the_paper_formula(beta):
    logits, labels = random_case()
    terms = []
    for b, t, y in targets(labels):
        c = ce(logits[b, t], y)
        terms.append(math.exp(-c) ** beta * c)
    expected = -sum(terms) / len(terms)
    assert wga_loss(logits, labels, beta=beta).item() == pytest.approx(expected, abs=1e-5)
    if beta == 0.0:  # no weighting: gradient ascent
        assert wga_loss(logits, labels, beta=0.0).item() == pytest.approx(
            -token_nll(logits, labels).item(), abs=1e-6
        )


@pytest.mark.parametrize("beta1, beta2", [(5.0, 1.0), (0.0, 0.0), (2.0, 3.0), (1.0, 0.0)])
def test_satimp_loss_is_the_paper_formula(beta1, beta2):
    logits, labels = random_case(1)
    terms = []
    for b, t, y in targets(labels):
        c = ce(logits[b, t], y)
        p = math.exp(-c)
        terms.append(p**beta1 * (1 - p) ** beta2 * c)
    expected = -sum(terms) / len(terms)
    got = satimp_loss(logits, labels, beta1=beta1, beta2=beta2).item()
    assert got == pytest.approx(expected, abs=1e-5)
    if beta2 == 0.0:  # without the importance factor it is WGA
        assert got == pytest.approx(wga_loss(logits, labels, beta=beta1).item(), abs=1e-6)


@pytest.mark.parametrize("skip_first", [0, 1, 2])
def test_ce_u_loss_is_the_paper_formula(skip_first):
    logits, labels = random_case(2)
    terms, seen = [], {}
    for b, t, y in targets(labels):
        seen[b] = seen.get(b, 0) + 1
        if seen[b] <= skip_first:  # the first target tokens of each sequence are left out
            continue
        z = [float(v) for v in logits[b, t]]
        log_z = max(z) + math.log(sum(math.exp(v - max(z)) for v in z))
        others = [v for i, v in enumerate(z) if i != y]
        norm = sum(math.exp(v) for v in others)
        q = [0.0 if i == y else math.exp(v) / norm for i, v in enumerate(z)]
        terms.append(-sum(qi * (v - log_z) for qi, v in zip(q, z)))
    expected = sum(terms) / len(terms)
    got = ce_u_loss(logits, labels, skip_first=skip_first).item()
    assert got == pytest.approx(expected, abs=1e-5)


def test_ce_u_skip_first_counts_targets_not_positions():
    logits, labels = random_case(2)
    # row 2 has its first targets at positions 3..5; skipping 3 drops the row entirely
    only_row2 = labels.clone()
    only_row2[:2] = -100
    with pytest.raises(ValueError, match="no target tokens left after skipping the first 3"):
        ce_u_loss(logits, only_row2, skip_first=3)
    assert torch.isfinite(ce_u_loss(logits, only_row2, skip_first=2))
    with pytest.raises(ValueError, match="skip_first must be an int >= 0, got -1"):
        ce_u_loss(logits, labels, skip_first=-1)


def test_logit_flatness_is_the_paper_formula_and_zero_when_uniform():
    logits, labels = random_case(3)
    terms = []
    for b, t, _ in targets(labels):
        z = [float(v) for v in logits[b, t]]
        terms.append((max(z) - sum(z) / len(z)) ** 2)
    expected = sum(terms) / len(terms)
    assert logit_flatness(logits, labels).item() == pytest.approx(expected, abs=1e-5)
    # positions without a target do not count: change their logits, the value stays
    moved = logits.clone()
    moved[0, 3:] += 50.0 * torch.arange(7, dtype=moved.dtype)  # rows 0, t >= 3 predict padding
    assert logit_flatness(moved, labels).item() == pytest.approx(expected, abs=1e-5)
    flat = torch.full_like(logits, 2.5)
    assert logit_flatness(flat, labels).item() == 0.0
    with pytest.raises(ValueError, match="no real target tokens"):
        logit_flatness(logits, torch.full_like(labels, -100))


def test_dual_update_is_projected_dual_ascent():
    # lambda + lr * (loss - bound), never below zero, in float64 like Python floats
    assert dual_update(0.5, 2.0, bound=1.0, lr=0.3).item() == 0.5 + 0.3 * (2.0 - 1.0)
    assert dual_update(0.5, 0.25, bound=1.0, lr=0.3).item() == 0.5 + 0.3 * (0.25 - 1.0)
    assert dual_update(0.1, 0.0, bound=1.0, lr=1.0).item() == 0.0  # projected onto lambda >= 0
    assert dual_update(0.7, 9.0, bound=1.0, lr=0.0).item() == 0.7  # step size 0: fixed lambda
    lam = torch.tensor(0.3, dtype=torch.float64)
    out = dual_update(lam, torch.tensor(1.5, requires_grad=True), bound=0.5, lr=0.1)
    assert out.dtype == torch.float64 and not out.requires_grad
    assert out.item() == 0.3 + 0.1 * (1.5 - 0.5)
    with pytest.raises(ValueError, match="dual lr must be >= 0, got -1"):
        dual_update(0.3, 1.0, bound=0.5, lr=-1)


# ----------------------------------------------------------------------------- gradients
def _probabilities(logits, labels):
    """``(mask, softmax, onehot, p_true)`` of the shifted predictions, computed here."""
    z = logits[:, :-1].detach()
    y = labels[:, 1:]
    mask = y != -100
    prob = torch.softmax(z, dim=-1)
    onehot = F.one_hot(y.clamp_min(0), z.size(-1)).to(z.dtype)
    return mask, prob, onehot, (prob * onehot).sum(-1)


def _analytic_gradient(kind, logits, labels, **kw):
    """d loss / d logits with the weights / targets held constant, written from the formulas."""
    mask, prob, onehot, p = _probabilities(logits, labels)
    grad = torch.zeros_like(logits)
    if kind in ("wga", "satimp"):
        # -mean(w * CE): d/dz = -(w / n) * (softmax - onehot)
        if kind == "wga":
            w = p ** kw["beta"]
        else:
            w = p ** kw["beta1"] * (1 - p) ** kw["beta2"]
        n = mask.sum()
        g = -(w / n).unsqueeze(-1) * (prob - onehot)
    elif kind == "ce_u":
        # mean CE(q, softmax(z)) over the kept positions: d/dz = (softmax - q) / n
        keep = mask & (mask.cumsum(1) > kw["skip_first"])
        mask, n = keep, keep.sum()
        q = prob * (1 - onehot)
        q = q / q.sum(-1, keepdim=True)
        g = (prob - q) / n
    else:  # flatness: mean (max - mean)^2 -> 2 (max - mean) (onehot(argmax) - 1/V) / n
        z = logits[:, :-1].detach()
        n, vocab = mask.sum(), z.size(-1)
        margin = z.amax(-1) - z.mean(-1)
        top = F.one_hot(z.argmax(-1), vocab).to(z.dtype)
        g = (2 * margin / n).unsqueeze(-1) * (top - 1.0 / vocab)
    grad[:, :-1] = g * mask.unsqueeze(-1)
    return grad


def _undetached(kind, logits, labels, **kw):
    """The same formula with gradients flowing into the weights / targets (what must not happen)."""
    z, y = logits[:, :-1], labels[:, 1:]
    mask = y != -100
    logp = torch.log_softmax(z, dim=-1)
    nll = -logp.gather(-1, y.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    p = torch.exp(-nll)
    if kind == "wga":
        return -((p ** kw["beta"] * nll) * mask).sum() / mask.sum()
    if kind == "satimp":
        return -((p ** kw["beta1"] * (1 - p) ** kw["beta2"] * nll) * mask).sum() / mask.sum()
    keep = mask & (mask.cumsum(1) > kw["skip_first"])
    q = torch.softmax(z.scatter(-1, y.clamp_min(0).unsqueeze(-1), float("-inf")), dim=-1)
    return (-(q * logp).sum(-1) * keep).sum() / keep.sum()


GRADIENT_CASES = [
    ("wga", wga_loss, {"beta": 1.0}),
    ("wga", wga_loss, {"beta": 2.5}),
    ("satimp", satimp_loss, {"beta1": 5.0, "beta2": 1.0}),
    ("satimp", satimp_loss, {"beta1": 1.5, "beta2": 2.0}),
    ("ce_u", ce_u_loss, {"skip_first": 1}),
    ("ce_u", ce_u_loss, {"skip_first": 0}),
    ("flatness", logit_flatness, {}),
]


@pytest.mark.parametrize(
    "kind, loss_fn, kw",
    GRADIENT_CASES,
    ids=["-".join([k, *(f"{a}={v:g}" for a, v in kw.items())]) for k, _, kw in GRADIENT_CASES],
)
def test_gradient_treats_weights_and_targets_as_constants(kind, loss_fn, kw):
    logits, labels = random_case(4, vocab=5)
    logits = (0.7 * logits).requires_grad_(True)  # moderate logits: no weight underflows to 0
    (grad,) = torch.autograd.grad(loss_fn(logits, labels, **kw), logits)
    expected = _analytic_gradient(kind, logits, labels, **kw)
    scale = expected.abs().max().item()
    assert scale > 1e-4
    assert (grad - expected).abs().max().item() <= 1e-5 * scale
    if kind != "flatness":  # control: letting the gradient into the weights / targets differs
        (wrong,) = torch.autograd.grad(_undetached(kind, logits, labels, **kw), logits)
        assert (wrong - expected).abs().max().item() > 0.1 * scale
