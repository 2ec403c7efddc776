"""Loss functions against values computed by hand or by a naive independent loop."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_unlearn import losses as L

torch.manual_seed(0)


def naive_nll(logits, labels):
    """Independent loop: NLL of labels[t+1] under softmax(logits[t])."""
    total, count = 0.0, 0
    per_seq = []
    for b in range(logits.size(0)):
        s, n = 0.0, 0
        for t in range(logits.size(1) - 1):
            y = int(labels[b, t + 1])
            if y == -100:
                continue
            z = logits[b, t].double()
            lse = math.log(sum(math.exp(v) for v in z.tolist()))
            s += lse - float(z[y])
            n += 1
        per_seq.append((s, n))
        total += s
        count += n
    return total / count, per_seq


def test_token_nll_by_hand():
    # two positions, vocabulary of 2: logits [0, 0] -> p = 0.5 for the target
    logits = torch.zeros(1, 3, 2)
    logits[0, 1] = torch.tensor([math.log(3.0), 0.0])  # p(token 0) = 3/4
    labels = torch.tensor([[1, 1, 0]])
    # position 0 predicts labels[1] = 1 with p 0.5; position 1 predicts labels[2] = 0 with p 0.75
    expected = (-math.log(0.5) - math.log(0.75)) / 2
    assert L.token_nll(logits, labels).item() == pytest.approx(expected, abs=1e-6)


def test_token_nll_masking_and_shift_match_naive_loop():
    logits = torch.randn(3, 7, 11)
    labels = torch.randint(0, 11, (3, 7))
    labels[0, 4:] = -100
    labels[2, 0] = -100  # the first label is never a target anyway
    labels[1, 3] = -100
    expected, per_seq = naive_nll(logits, labels)
    assert L.token_nll(logits, labels).item() == pytest.approx(expected, rel=1e-5)
    sums = L.sequence_nll(logits, labels, normalize=False)
    means = L.sequence_nll(logits, labels)
    for b, (s, n) in enumerate(per_seq):
        assert sums[b].item() == pytest.approx(s, rel=1e-5)
        assert means[b].item() == pytest.approx(s / n, rel=1e-5)
    assert torch.allclose(L.sequence_logprob(logits, labels), -sums)


def test_changing_a_masked_position_changes_nothing():
    logits = torch.randn(1, 5, 6)
    labels = torch.tensor([[1, 2, -100, 4, 5]])
    base = L.token_nll(logits, labels)
    logits2 = logits.clone()
    logits2[0, 1] += 100.0  # position 1 predicts labels[2] = -100
    logits2[0, 4] += 100.0  # the last position predicts nothing
    assert torch.equal(base, L.token_nll(logits2, labels))


def test_all_masked_batch_is_rejected():
    with pytest.raises(ValueError, match="no real target tokens"):
        L.token_nll(torch.randn(2, 4, 5), torch.full((2, 4), -100))


def test_target_cross_entropy_naive_and_uniform():
    logits = torch.randn(2, 5, 7)
    labels = torch.randint(0, 7, (2, 5))
    labels[1, 3:] = -100
    q = torch.softmax(torch.randn(2, 5, 7), dim=-1)
    total, n = 0.0, 0
    for b in range(2):
        for t in range(4):
            if labels[b, t + 1] == -100:
                continue
            logp = torch.log_softmax(logits[b, t].double(), -1)
            total += float(-(q[b, t].double() * logp).sum())
            n += 1
    assert L.target_cross_entropy(logits, labels, q).item() == pytest.approx(total / n, rel=1e-5)
    uniform = torch.full_like(logits, 1 / 7)
    assert L.uniform_cross_entropy(logits, labels).item() == pytest.approx(
        L.target_cross_entropy(logits, labels, uniform).item(), rel=1e-6
    )
    # one-hot targets reduce to the NLL of those tokens
    onehot = torch.zeros_like(logits)
    onehot[:, :-1].scatter_(-1, labels[:, 1:].clamp_min(0).unsqueeze(-1), 1.0)
    assert L.target_cross_entropy(logits, labels, onehot).item() == pytest.approx(
        L.token_nll(logits, labels).item(), rel=1e-5
    )


def test_kl_by_hand_and_zero_for_identical():
    # one target position; P_ref = (0.5, 0.5), P_theta = (0.75, 0.25)
    ref = torch.zeros(1, 2, 2)
    cur = torch.zeros(1, 2, 2)
    cur[0, 0] = torch.tensor([math.log(3.0), 0.0])
    labels = torch.tensor([[0, 1]])
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert L.kl_to_reference(cur, ref, labels).item() == pytest.approx(expected, abs=1e-6)
    x = torch.randn(2, 6, 9)
    assert L.kl_to_reference(x, x.clone(), torch.randint(0, 9, (2, 6))).item() == pytest.approx(
        0, abs=1e-6
    )
    with pytest.raises(ValueError, match="share the vocabulary"):
        L.kl_to_reference(
            torch.randn(1, 3, 5), torch.randn(1, 3, 6), torch.zeros(1, 3, dtype=torch.long)
        )


def test_adversarial_labels_exclude_the_true_next_token():
    ref = torch.zeros(1, 3, 4)
    ref[0, 0] = torch.tensor([0.0, 5.0, 4.0, 1.0])  # best is 1, true next is 1 -> pick 2
    ref[0, 1] = torch.tensor([3.0, 0.0, 1.0, 2.0])  # best is 0, true next is 3 -> keep 0
    labels = torch.tensor([[0, 1, 3]])
    out = L.adversarial_labels(ref, labels)
    assert out.tolist() == [[-100, 2, 0]]
    big = torch.randn(4, 9, 13)
    lab = torch.randint(0, 13, (4, 9))
    lab[0, 5:] = -100
    adv = L.adversarial_labels(big, lab)
    real = lab[:, 1:] != -100
    assert (adv[:, 1:][real] != lab[:, 1:][real]).all()
    assert (adv[:, 1:][~real] == -100).all()
    # ties with the true token: the argmax over the rest is still not the true token
    tie = torch.zeros(1, 2, 3)
    assert L.adversarial_labels(tie, torch.tensor([[0, 0]]))[0, 1].item() != 0


def test_token_statistics_match_definitions():
    logits = torch.randn(2, 6, 5)
    labels = torch.randint(0, 5, (2, 6))
    labels[0, 4:] = -100
    stats = L.token_statistics(logits, labels)
    logp = torch.log_softmax(logits[:, :-1], -1)
    b, t = 1, 2
    y = labels[b, t + 1]
    assert stats["logprob"][b, t].item() == pytest.approx(logp[b, t, y].item(), abs=1e-6)
    p = logp[b, t].exp()
    mu = (p * logp[b, t]).sum()
    sigma = ((p * (logp[b, t] - mu) ** 2).sum()).sqrt()
    assert stats["mu"][b, t].item() == pytest.approx(mu.item(), abs=1e-5)
    assert stats["sigma"][b, t].item() == pytest.approx(sigma.item(), abs=1e-5)
    assert not stats["mask"][0, 3:].any() and stats["logprob"][0, 3:].abs().sum() == 0


@pytest.mark.parametrize("chunk_elements", [None, 1, 12])
def test_token_statistics_chunked_equals_full_softmax(chunk_elements):
    """The chunked, padding-skipping computation equals the textbook one at every position."""
    torch.manual_seed(3)
    logits = torch.randn(3, 7, 11) * 4
    labels = torch.randint(0, 11, (3, 7))
    labels[1, 3:] = -100
    labels[2, :] = -100  # a row with no target at all
    stats = L.token_statistics(logits, labels, chunk_elements=chunk_elements)
    logp = torch.log_softmax(logits[:, :-1], -1)
    p = logp.exp()
    mask = labels[:, 1:] != -100
    y = labels[:, 1:].clamp_min(0)
    mu = (p * logp).sum(-1)
    sigma = (p * (logp - mu.unsqueeze(-1)) ** 2).sum(-1).sqrt()
    expected = {
        "logprob": logp.gather(-1, y.unsqueeze(-1)).squeeze(-1) * mask,
        "mu": mu * mask,
        "sigma": sigma * mask,
    }
    for name, value in expected.items():
        torch.testing.assert_close(stats[name], value, atol=2e-5, rtol=1e-5)
    assert torch.equal(stats["correct"], (logits[:, :-1].argmax(-1) == labels[:, 1:]) & mask)
    assert torch.equal(stats["mask"], mask)
    assert stats["mu"][2].abs().sum() == 0 and mask[1].sum() == 2


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="expected logits"):
        L.token_nll(torch.randn(2, 3), torch.zeros(2, 3, dtype=torch.long))


@pytest.mark.parametrize("chunk", [None, 7, 10**9])
def test_kl_to_reference_chunked_value_and_gradient_equal_the_plain_formula(chunk):
    """The chunked KL (no full log-softmax held) has the plain formula's value and gradient, any
    chunk size, with padding and a bf16 model."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 5, 11, generator=g, dtype=torch.float64)
    ref = torch.randn(3, 5, 11, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 11, (3, 5), generator=g)
    labels[0, 3:] = -100
    labels[2, 1] = -100

    def plain(z):
        _, _, mask = L.shift_for_next_token(z, labels)
        logp = torch.log_softmax(z[:, :-1], -1)
        logq = torch.log_softmax(ref[:, :-1], -1)
        kl = (logq.exp() * (logq - logp)).sum(-1)
        return (kl * mask).sum() / mask.sum()

    z1 = logits.clone().requires_grad_(True)
    expected = plain(z1)
    expected.backward()
    z2 = logits.clone().requires_grad_(True)
    kw = {} if chunk is None else {"chunk_elements": chunk}
    # a reference that could take a gradient: the KL must treat it as a constant target
    ref_leaf = ref.clone().requires_grad_(True)
    got = L.kl_to_reference(z2, ref_leaf, labels, **kw)
    got.backward()
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(z2.grad, z1.grad, rtol=1e-5, atol=1e-7)
    assert ref_leaf.grad is None
    # bf16 logits: a gradient of the same dtype
    z3 = logits.to(torch.bfloat16).requires_grad_(True)
    L.kl_to_reference(z3, ref.to(torch.bfloat16), labels).backward()
    assert z3.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_kl_to_reference_equals_the_kl_of_the_logits(with_bias):
    """From hidden states and output layers, chunk by chunk: the value and the gradients (to the
    hidden states and to the trained output layer) of kl_to_reference on the full logits."""
    g = torch.Generator().manual_seed(5)
    h = torch.randn(2, 6, 4, generator=g, dtype=torch.float64)
    h_ref = torch.randn(2, 6, 4, generator=g, dtype=torch.float64)
    w = torch.randn(9, 4, generator=g, dtype=torch.float64)
    w_ref = torch.randn(9, 4, generator=g, dtype=torch.float64)
    b = torch.randn(9, generator=g, dtype=torch.float64) if with_bias else None
    labels = torch.randint(0, 9, (2, 6), generator=g)
    labels[1, 4:] = -100

    def leaves():
        return h.clone().requires_grad_(True), w.clone().requires_grad_(True), (
            None if b is None else b.clone().requires_grad_(True))  # fmt: skip

    h1, w1, b1 = leaves()
    logits = h1 @ w1.T + (0 if b1 is None else b1)
    expected = L.kl_to_reference(logits, h_ref @ w_ref.T + (0 if b is None else b), labels)
    (2.5 * expected).backward()  # a scaled incoming gradient (accumulation, a weight)
    h2, w2, b2 = leaves()
    got = L.linear_kl_to_reference(h2, h_ref, w2, w_ref, labels, bias=b2,
                                   reference_bias=b, chunk_elements=20)  # fmt: skip
    (2.5 * got).backward()
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    # both compute the softmaxes in float32 (gradients up to ~0.5 here, float32 eps 1.2e-7): the
    # summation order, which differs between CPUs' kernels, moves an element by ~1e-7; a wrong
    # gradient is off by ~1e-1
    close = {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(h2.grad, h1.grad, **close)
    torch.testing.assert_close(w2.grad, w1.grad, **close)
    if with_bias:
        torch.testing.assert_close(b2.grad, b1.grad, **close)
    # a frozen output layer (LoRA) gets no gradient, the hidden states the same one
    h3 = h.clone().requires_grad_(True)
    (2.5 * L.linear_kl_to_reference(h3, h_ref, w, w_ref, labels, bias=b, reference_bias=b,
                                    chunk_elements=20)).backward()  # fmt: skip
    torch.testing.assert_close(h3.grad, h1.grad, **close)
    # without autograd: the same value, nothing to back-propagate
    with torch.no_grad():
        value = L.linear_kl_to_reference(h2, h_ref, w2, w_ref, labels, bias=b2, reference_bias=b)
    assert value.item() == pytest.approx(expected.item(), rel=1e-6) and not value.requires_grad
