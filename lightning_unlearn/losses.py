"""Loss functions for unlearning, as pure tensor functions.

Conventions (the same as Hugging Face causal LMs):

* ``logits`` has shape ``[batch, seq, vocab]``: ``logits[:, t]`` is the model's prediction for the
  token at position ``t + 1``.
* ``labels`` has shape ``[batch, seq]`` and is aligned with ``input_ids`` (not shifted); positions
  that carry no target (padding, prompt, dropped tokens) hold ``IGNORE_INDEX`` (-100).

The shift by one between logits and labels happens in exactly one place, :func:`shift_for_next_token`;
every other function calls it. Nothing here knows about Lightning.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100

__all__ = [
    "IGNORE_INDEX",
    "shift_for_next_token",
    "token_nll",
    "per_token_nll",
    "sequence_nll",
    "sequence_logprob",
    "target_cross_entropy",
    "uniform_cross_entropy",
    "kl_to_reference",
    "linear_kl_to_reference",
    "adversarial_labels",
    "token_statistics",
    "npo_loss",
    "simnpo_loss",
    "dpo_loss",
    "whp_generic_logits",
    "undial_target_logits",
    "soft_target_cross_entropy",
    "activation_mse",
    "target_counts",
    "argmax_labels",
    "retain_term_loss",
    "check_retain_term",
    "RETAIN_TERMS",
    "wga_loss",
    "satimp_loss",
    "ce_u_loss",
    "logit_flatness",
    "dual_update",
    "banded_target_loss",
]


def shift_for_next_token(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Align predictions with the tokens they predict.

    Returns ``(logits[:, :-1], labels[:, 1:], mask)`` where ``mask`` is True on positions with a
    real target. This is the only place in the library where the shift is done.
    """
    if logits.dim() != 3 or labels.dim() != 2 or logits.shape[:2] != labels.shape:
        raise ValueError(
            f"expected logits [batch, seq, vocab] and labels [batch, seq] with equal batch/seq, "
            f"got logits {tuple(logits.shape)} and labels {tuple(labels.shape)}"
        )
    shifted_logits = logits[:, :-1, :]
    shifted_labels = labels[:, 1:]
    return shifted_logits, shifted_labels, shifted_labels != IGNORE_INDEX


def per_token_nll(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(nll, mask)``: the negative log-likelihood of every next token, ``[batch, seq-1]``, and
    the mask of real targets (``nll`` is 0 where the mask is False)."""
    shifted_logits, shifted_labels, mask = shift_for_next_token(logits, labels)
    nll = F.cross_entropy(
        shifted_logits.float().reshape(-1, shifted_logits.size(-1)),
        shifted_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view_as(shifted_labels)
    return nll, mask


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    count = mask.sum()
    if count == 0:
        raise ValueError(
            "batch has no real target tokens (every label is -100); check the data's labels "
            "or drop empty documents"
        )
    return (values * mask).sum() / count


def token_nll(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean negative log-likelihood over all real (non ``-100``) target tokens of the batch."""
    nll, mask = per_token_nll(logits, labels)
    return _masked_mean(nll, mask)


def sequence_nll(logits: Tensor, labels: Tensor, *, normalize: bool = True) -> Tensor:
    """Negative log-likelihood per sequence, shape ``[batch]``.

    Args:
        normalize: divide each sequence's sum by its number of real target tokens (mean NLL);
            otherwise return the sum (``-log P(y)``). Sequences without targets give 0.
    """
    nll, mask = per_token_nll(logits, labels)
    total = (nll * mask).sum(dim=1)
    if not normalize:
        return total
    return total / mask.sum(dim=1).clamp_min(1)


def sequence_logprob(logits: Tensor, labels: Tensor) -> Tensor:
    """``log P(y)`` per sequence (sum over real target tokens), shape ``[batch]``."""
    return -sequence_nll(logits, labels, normalize=False)


def target_cross_entropy(logits: Tensor, labels: Tensor, target_probs: Tensor) -> Tensor:
    """Cross-entropy ``E_{q~Q}[-log P_theta(q)]`` against a target distribution, mean over tokens.

    The paper's ``CE(Q_{w_t}, P_theta(.|w_<t))`` term. ``target_probs`` has the shape of
    ``logits`` and ``target_probs[:, t]`` is the target distribution for the prediction made at
    position ``t`` (the same alignment as ``logits``); positions are selected with ``labels``.
    The target is a constant: no gradient flows into it.
    """
    if target_probs.shape != logits.shape:
        raise ValueError(
            f"target_probs must have the shape of logits {tuple(logits.shape)}, "
            f"got {tuple(target_probs.shape)}"
        )
    shifted_logits, _, mask = shift_for_next_token(logits, labels)
    shifted_targets, _, _ = shift_for_next_token(target_probs.detach(), labels)
    logp = F.log_softmax(shifted_logits.float(), dim=-1)
    ce = -(shifted_targets.float() * logp).sum(dim=-1)
    return _masked_mean(ce, mask)


def soft_target_cross_entropy(logits: Tensor, labels: Tensor, target_logits: Tensor) -> Tensor:
    """:func:`target_cross_entropy` with the target given as logits (softmax applied here)."""
    return target_cross_entropy(logits, labels, F.softmax(target_logits.float(), dim=-1))


def uniform_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy against the uniform distribution over the vocabulary, mean over tokens.

    Equals ``target_cross_entropy`` with ``Q = 1/V`` without materialising the target tensor.
    """
    shifted_logits, _, mask = shift_for_next_token(logits, labels)
    ce = -F.log_softmax(shifted_logits.float(), dim=-1).mean(dim=-1)
    return _masked_mean(ce, mask)


def kl_to_reference(
    logits: Tensor, reference_logits: Tensor, labels: Tensor, *, chunk_elements: int | None = None
) -> Tensor:
    """``KL(P_ref || P_theta)`` per token, mean over real target tokens.

    ``reference_logits`` come from the frozen original model on the same input; they are a
    constant target (detached): no gradient flows into them.

    Computed in float32 chunks of about ``chunk_elements`` logits (default as
    :func:`token_statistics`) at the real target positions only, with the gradient
    ``(softmax(z) - softmax(z_ref)) / n`` recomputed chunk by chunk in the backward pass: no
    ``[batch, seq, vocab]`` log-softmax of either model is ever held (four of them, 1.6 GB for
    4 x 512 tokens of a 49k vocabulary, in the plain formula), only the two logits tensors.
    """
    if reference_logits.shape != logits.shape:
        raise ValueError(
            f"reference logits {tuple(reference_logits.shape)} do not match logits "
            f"{tuple(logits.shape)}: the reference model must share the vocabulary"
        )
    _, _, mask = shift_for_next_token(logits, labels)
    where = mask.nonzero()  # (batch, position) of every real target: logits[b, t] predicts it
    if where.shape[0] == 0:
        _masked_mean(mask.float(), mask)  # raises the clear "no real target tokens" error
    if chunk_elements is None:
        chunk_elements = 2**22 if logits.device.type == "cpu" else 2**26
    rows = max(1, int(chunk_elements) // max(1, logits.shape[-1]))
    return _KLToReference.apply(logits, reference_logits.detach(), where, rows)


def linear_kl_to_reference(
    hidden: Tensor,
    reference_hidden: Tensor,
    weight: Tensor,
    reference_weight: Tensor,
    labels: Tensor,
    *,
    bias: Tensor | None = None,
    reference_bias: Tensor | None = None,
    chunk_elements: int | None = None,
) -> Tensor:
    """:func:`kl_to_reference` from the two models' last hidden states and output projections,
    the logits made chunk by chunk and never held: ``logits = hidden @ weight.T (+ bias)``.

    The value and the gradients (to ``hidden`` and, when it requires one, to ``weight``) are those
    of ``kl_to_reference(hidden @ weight.T, reference_hidden @ reference_weight.T, labels)``; the
    memory of neither ``[batch, seq, vocab]`` logits tensor is needed (2 x 400 MB for 4 x 512
    tokens of a 49k vocabulary, 2 x 2 GB for 4096 tokens of a 128k one). When gradients are
    wanted they are made in the forward, chunk by chunk, and held until the backward (the hidden
    states' size, plus the output layer's in float32 when it is trained): no logits recomputed.
    """
    if hidden.shape != reference_hidden.shape or weight.shape != reference_weight.shape:
        raise ValueError(
            f"the models' hidden states {tuple(hidden.shape)} / {tuple(reference_hidden.shape)} "
            f"and output layers {tuple(weight.shape)} / {tuple(reference_weight.shape)} must match"
        )
    mask = labels[:, 1:] != IGNORE_INDEX
    where = mask.nonzero()
    if where.shape[0] == 0:
        _masked_mean(mask.float(), mask)  # raises the clear "no real target tokens" error
    if chunk_elements is None:
        chunk_elements = 2**22 if hidden.device.type == "cpu" else 2**26
    rows = max(1, int(chunk_elements) // max(1, weight.shape[0]))
    wants = tuple(
        torch.is_grad_enabled() and x is not None and x.requires_grad
        for x in (hidden, weight, bias)
    )
    return _LinearKLToReference.apply(
        hidden, reference_hidden.detach(), weight, reference_weight.detach(), bias,
        None if reference_bias is None else reference_bias.detach(), where, rows, wants,
    )  # fmt: skip


def _logits_rows(hidden: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    out = hidden.float() @ weight.float().T
    return out if bias is None else out + bias.float()


class _LinearKLToReference(torch.autograd.Function):
    """Mean ``KL(softmax(r) || softmax(z))`` over ``where``, ``z = h W^T + b`` made per chunk.

    The gradients are made in the forward, chunk by chunk, while each chunk's two logits are at
    hand (``d loss / d z = softmax(z) - softmax(r)``, divided by the number of positions); the
    backward only scales them by the incoming gradient. Nothing is recomputed: the output layer is
    multiplied twice per position for the value and twice for the gradients, as the plain formula
    does, and the memory held until the backward is that of the gradients themselves (the hidden
    states' shape, and the output layer's when it is trained).
    """

    @staticmethod
    def forward(
        ctx, hidden, reference, weight, reference_weight, bias, reference_bias, where, rows, wants
    ):
        want_hidden, want_weight, want_bias = wants
        count = where.shape[0]
        total = torch.zeros((), dtype=torch.float64, device=hidden.device)
        grad_hidden = torch.zeros_like(hidden, dtype=torch.float32) if want_hidden else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if want_weight else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if want_bias else None
        for start in range(0, count, rows):
            b, t = where[start : start + rows].unbind(1)
            h = hidden[b, t].float()
            logp = _logits_rows(h, weight, bias).log_softmax(-1)
            logq = _logits_rows(reference[b, t], reference_weight, reference_bias).log_softmax(-1)
            q = logq.exp()
            total += (q * (logq - logp)).sum(dtype=torch.float64)
            if not any(wants):
                continue
            g = logp.exp_().sub_(q).div_(count)  # d loss / d logits of the chunk
            if grad_hidden is not None:
                grad_hidden[b, t] = g @ weight.float()
            if grad_weight is not None:
                grad_weight += g.T @ h
            if grad_bias is not None:
                grad_bias += g.sum(0)
        ctx.grads = (grad_hidden, grad_weight, grad_bias)
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        return (total / count).to(torch.float32)

    @staticmethod
    def backward(ctx, grad: Tensor):
        grads = tuple(
            None if g is None else (g * grad.float()).to(dtype)
            for g, dtype in zip(ctx.grads, ctx.dtypes)
        )
        ctx.grads = None
        grad_hidden, grad_weight, grad_bias = grads
        return grad_hidden, None, grad_weight, None, grad_bias, None, None, None, None


class _KLToReference(torch.autograd.Function):
    """Mean ``KL(q || p)`` over the positions ``where`` of ``[batch, seq, vocab]`` logits, in
    chunks of ``rows`` positions; the backward recomputes ``softmax(z) - q`` chunk by chunk."""

    @staticmethod
    def forward(ctx, logits: Tensor, reference: Tensor, where: Tensor, rows: int) -> Tensor:
        total = torch.zeros((), dtype=torch.float64, device=logits.device)
        for start in range(0, where.shape[0], rows):
            b, t = where[start : start + rows].unbind(1)
            logp = logits[b, t].float().log_softmax(-1)
            logq = reference[b, t].float().log_softmax(-1)
            total += (logq.exp() * (logq - logp)).sum(dtype=torch.float64)
        ctx.save_for_backward(logits, reference, where)
        ctx.rows = rows
        return (total / where.shape[0]).to(torch.float32)

    @staticmethod
    def backward(ctx, grad: Tensor):
        logits, reference, where = ctx.saved_tensors
        out = torch.zeros_like(logits)
        scale = grad.float() / where.shape[0]
        for start in range(0, where.shape[0], ctx.rows):
            b, t = where[start : start + ctx.rows].unbind(1)
            p = logits[b, t].float().softmax(-1)
            q = reference[b, t].float().softmax(-1)
            out[b, t] = ((p - q) * scale).to(out.dtype)
        return out, None, None, None


def adversarial_labels(reference_logits: Tensor, labels: Tensor) -> Tensor:
    """Labels for the adversarial-samples method: the original model's best *wrong* next token.

    For each position ``t`` with a target ``labels[t + 1] = w``, the new target is
    ``argmax_{a != w} P_M(a | w_<=t)``. The result is aligned like ``labels`` (unshifted) so it can
    be passed to :func:`token_nll`; positions without a target stay ``-100``.
    """
    shifted_ref, shifted_labels, mask = shift_for_next_token(reference_logits, labels)
    masked = shifted_ref.detach().float().clone()
    true_next = shifted_labels.clamp_min(0).unsqueeze(-1)
    masked.scatter_(-1, true_next, float("-inf"))
    best_wrong = masked.argmax(dim=-1)
    out = torch.full_like(labels, IGNORE_INDEX)
    out[:, 1:] = torch.where(mask, best_wrong, torch.full_like(best_wrong, IGNORE_INDEX))
    return out


@torch.no_grad()
def token_statistics(
    logits: Tensor, labels: Tensor, *, chunk_elements: int | None = None
) -> dict[str, Tensor]:
    """Per-token quantities for evaluation from one forward pass, all shaped ``[batch, seq-1]``.

    * ``logprob``: ``log P(w_t | w_<t)`` of the true token,
    * ``mu``, ``sigma``: mean and standard deviation of ``log P(.)`` under the model's own
      distribution at that position (for Min-K%++),
    * ``correct``: whether the argmax equals the true token,
    * ``mask``: real target positions.

    Evaluation only (no gradients). Only positions with a real target are computed (padding is
    skipped), in float32 chunks of about ``chunk_elements`` logits (default 2**22 on CPU, 2**26
    on an accelerator): the full ``[batch, seq, vocab]`` log-softmax is never materialised, which
    on a 49k-vocabulary model makes this 2-2.5x faster on CPU and bounds its memory. Values at
    positions without a target are 0 (``False`` for ``correct``).
    """
    shifted_logits, shifted_labels, mask = shift_for_next_token(logits, labels)
    if chunk_elements is None:
        chunk_elements = 2**22 if logits.device.type == "cpu" else 2**26
    vocab = shifted_logits.shape[-1]
    rows_per_chunk = max(1, int(chunk_elements) // max(1, vocab))
    shape, device = mask.shape, logits.device
    logprob = torch.zeros(shape, dtype=torch.float32, device=device)
    mu = torch.zeros_like(logprob)
    sigma = torch.zeros_like(logprob)
    correct = torch.zeros(shape, dtype=torch.bool, device=device)
    where = mask.nonzero()  # [n, 2]: (batch, position) of every real target
    for start in range(0, where.shape[0], rows_per_chunk):
        b, t = where[start : start + rows_per_chunk].unbind(1)
        z = shifted_logits[b, t].float()  # [n, vocab], a copy: safe to overwrite in place
        y = shifted_labels[b, t]
        correct[b, t] = z.argmax(-1) == y
        logp = z.sub_(torch.logsumexp(z, dim=-1, keepdim=True))
        logprob[b, t] = logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)
        weighted = logp.exp().mul_(logp)  # p * log p
        first = weighted.sum(-1)  # E_p[log p]
        second = torch.bmm(weighted.unsqueeze(1), logp.unsqueeze(2)).view(-1)  # E_p[(log p)^2]
        mu[b, t] = first
        sigma[b, t] = (second - first.square()).clamp_min(0).sqrt()
    return {"logprob": logprob, "mu": mu, "sigma": sigma, "correct": correct, "mask": mask}


# --------------------------------------------------------------------------------------------
# Pieces shared by methods from the wider literature.
# --------------------------------------------------------------------------------------------

RETAIN_TERMS = ("none", "nll", "kl")


def target_counts(labels: Tensor) -> Tensor:
    """Number of real next-token targets per sequence (``|y|``), shape ``[batch]``."""
    return (labels[:, 1:] != IGNORE_INDEX).sum(dim=1)


def npo_loss(logprob: Tensor, reference_logprob: Tensor, *, beta: float) -> Tensor:
    """Negative Preference Optimization (Zhang et al. 2024, arXiv:2404.05868), eq. (3).

    ``-(2/beta) * E[log sigmoid(-beta * (log pi_theta(y) - log pi_ref(y)))]`` over sequences,
    where ``log pi(y)`` is a sequence's summed token log-probability (:func:`sequence_logprob`).

    The derivative with respect to ``log pi_theta(y)`` is ``2 * sigmoid(beta * log_ratio) / n``
    (``n`` sequences): it tends to ``1/n`` as ``beta -> 0``, the gradient of gradient ascent's
    ``E[log pi_theta(y)]``; the loss value itself diverges like ``2 log 2 / beta``.
    """
    if beta <= 0:
        raise ValueError(f"npo beta must be > 0, got {beta}")
    if logprob.shape != reference_logprob.shape:
        raise ValueError(
            f"logprob {tuple(logprob.shape)} and reference_logprob "
            f"{tuple(reference_logprob.shape)} must have the same shape (one value per sequence)"
        )
    log_ratio = logprob - reference_logprob.detach()
    return (-2.0 / beta * F.logsigmoid(-beta * log_ratio)).mean()


def simnpo_loss(logprob: Tensor, lengths: Tensor, *, beta: float, delta: float = 0.0) -> Tensor:
    """SimNPO (Fan et al. 2024, arXiv:2410.07163), eq. (4): reference-free, length-normalised NPO.

    ``-(2/beta) * E[log sigmoid(-(beta/|y|) * log pi_theta(y) - delta)]``; ``delta`` is the
    paper's reward margin (called gamma there). ``lengths`` are the ``|y|`` (see
    :func:`target_counts`); sequences of length 0 count as length 1.
    """
    if beta <= 0:
        raise ValueError(f"simnpo beta must be > 0, got {beta}")
    if logprob.shape != lengths.shape:
        raise ValueError(
            f"logprob {tuple(logprob.shape)} and lengths {tuple(lengths.shape)} must have the "
            "same shape (one value per sequence)"
        )
    normalised = logprob / lengths.clamp_min(1).to(logprob.dtype)
    return (-2.0 / beta * F.logsigmoid(-beta * normalised - delta)).mean()


def dpo_loss(
    chosen_logprob: Tensor,
    rejected_logprob: Tensor,
    reference_chosen_logprob: Tensor,
    reference_rejected_logprob: Tensor,
    *,
    beta: float,
) -> Tensor:
    """Direct Preference Optimization (Rafailov et al. 2023, arXiv:2305.18290), eq. (7).

    ``-E[log sigmoid(beta * ((log pi(c) - log pi_ref(c)) - (log pi(r) - log pi_ref(r))))]``.
    """
    if beta <= 0:
        raise ValueError(f"dpo beta must be > 0, got {beta}")
    margin = (chosen_logprob - reference_chosen_logprob.detach()) - (
        rejected_logprob - reference_rejected_logprob.detach()
    )
    return -F.logsigmoid(beta * margin).mean()


def whp_generic_logits(base_logits: Tensor, reinforced_logits: Tensor, *, alpha: float) -> Tensor:
    """Who's Harry Potter generic-prediction logits (Eldan & Russinovich 2023, arXiv:2310.02238).

    ``v_generic = v_base - alpha * ReLU(v_reinforced - v_base)``, eq. (1): tokens whose logit the
    reinforced model (trained further on the forget set) raised are pushed down.
    """
    if alpha < 0:
        raise ValueError(f"whp alpha must be >= 0, got {alpha}")
    if base_logits.shape != reinforced_logits.shape:
        raise ValueError(
            f"base logits {tuple(base_logits.shape)} and reinforced logits "
            f"{tuple(reinforced_logits.shape)} must have the same shape"
        )
    base = base_logits.detach().float()
    return base - alpha * F.relu(reinforced_logits.detach().float() - base)


def argmax_labels(target_logits: Tensor, labels: Tensor) -> Tensor:
    """Hard labels from per-position target logits, aligned like ``labels`` (unshifted).

    The prediction made at position ``t`` becomes the label of position ``t + 1``; positions
    without a target in ``labels`` stay ``-100``. Pass the result to :func:`token_nll`.
    """
    shifted, _, mask = shift_for_next_token(target_logits, labels)
    best = shifted.detach().argmax(dim=-1)
    out = torch.full_like(labels, IGNORE_INDEX)
    out[:, 1:] = torch.where(mask, best, torch.full_like(best, IGNORE_INDEX))
    return out


def undial_target_logits(reference_logits: Tensor, labels: Tensor, *, strength: float) -> Tensor:
    """UNDIAL target (Dong et al. 2024, arXiv:2402.10052), eq. (2).

    The original model's logits with the true next token's logit lowered by ``strength``
    (``z - strength * onehot(y_t)``). Aligned like ``reference_logits``: ``target[:, t]`` is the
    adjusted prediction for the token at ``t + 1``; positions without a target are unchanged.
    """
    if strength < 0:
        raise ValueError(f"undial strength must be >= 0, got {strength}")
    target = reference_logits.detach().float().clone()
    _, shifted_labels, mask = shift_for_next_token(reference_logits, labels)
    idx = shifted_labels.clamp_min(0).unsqueeze(-1)
    penalty = (strength * mask).unsqueeze(-1).to(target.dtype)
    target[:, :-1, :].scatter_add_(-1, idx, -penalty)
    return target


def activation_mse(activations: Tensor, target: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Mean squared error between hidden states and a target, over real tokens (used by RMU).

    ``activations`` is ``[batch, seq, hidden]``; ``target`` broadcasts to it (a ``[hidden]``
    steering vector or the frozen model's ``[batch, seq, hidden]`` activations). The squared error
    is averaged over the hidden dimension, then over tokens where ``attention_mask`` is 1. Without
    a mask this equals ``F.mse_loss`` as in the WMDP code.
    """
    sq = (activations.float() - target.float()).square().mean(dim=-1)
    if attention_mask is None:
        return sq.mean()
    mask = attention_mask.to(sq.dtype)
    return (sq * mask).sum() / mask.sum().clamp_min(1)


def retain_term_loss(
    kind: str, logits: Tensor, labels: Tensor, reference_logits: Tensor | None = None
) -> Tensor:
    """The retain term of every method (``UnlearningModule.retain_loss``).

    Args:
        kind: ``"nll"`` (gradient descent on retain data, NPO's "RT") or ``"kl"``
            (``KL(P_ref || P_theta)``, needs ``reference_logits``).
    """
    if kind == "nll":
        return token_nll(logits, labels)
    if kind == "kl":
        if reference_logits is None:
            raise ValueError("retain term 'kl' needs the reference model's logits")
        return kl_to_reference(logits, reference_logits, labels)
    raise ValueError(
        f"retain term must be 'nll' or 'kl' ('none' computes no retain term), got {kind!r}"
    )


def check_retain_term(kind: str) -> str:
    """Validate a ``retain_term`` hyper-parameter; returns it."""
    if kind not in RETAIN_TERMS:
        raise ValueError(f"retain_term must be one of {list(RETAIN_TERMS)}, got {kind!r}")
    return kind


# --------------------------------------------------------------------------------------------
# Methods of 2025: token-reweighted gradient ascent (WGA, SatImp), CE-U, PDU.
# --------------------------------------------------------------------------------------------


def _check_non_negative(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def wga_loss(logits: Tensor, labels: Tensor, *, beta: float) -> Tensor:
    """Weighted gradient ascent, WGA (Wang et al., ICLR 2025, "Rethinking LLM Unlearning
    Objectives: A Gradient Perspective and Go Beyond", arXiv:2502.19301).

    ``-mean_t(p_t^beta * CE_t)`` over the real target tokens of the batch, where ``CE_t`` is the
    token's cross-entropy and ``p_t = exp(-CE_t)`` its probability. The weight ``p_t^beta`` is a
    constant (detached): the gradient is that of gradient ascent, token by token scaled by how
    likely the token still is, so tokens already forgotten stop pulling. ``beta = 0`` is gradient
    ascent.
    """
    _check_non_negative("wga beta", beta)
    nll, mask = per_token_nll(logits, labels)
    weight = torch.exp(-beta * nll.detach())  # p_t^beta
    return -_masked_mean(weight * nll, mask)


def satimp_loss(logits: Tensor, labels: Tensor, *, beta1: float, beta2: float) -> Tensor:
    """SatImp (Yang et al., ICML 2025, "Exploring Criteria of Loss Reweighting to Enhance LLM
    Unlearning", arXiv:2505.11953).

    ``-mean_t(p_t^beta1 * (1 - p_t)^beta2 * CE_t)`` over real target tokens (``p_t = exp(-CE_t)``):
    the saturation factor ``p^beta1`` favours tokens that are still likely, the importance factor
    ``(1 - p)^beta2`` damps those the model is already sure of. The weight is a constant
    (detached). ``beta2 = 0`` is :func:`wga_loss` with ``beta = beta1``.
    """
    _check_non_negative("satimp beta1", beta1)
    _check_non_negative("satimp beta2", beta2)
    nll, mask = per_token_nll(logits, labels)
    detached = nll.detach()
    weight = torch.exp(-beta1 * detached) * (-torch.expm1(-detached)).pow(beta2)
    return -_masked_mean(weight * nll, mask)


def ce_u_loss(logits: Tensor, labels: Tensor, *, skip_first: int = 1) -> Tensor:
    """Cross-entropy unlearning, CE-U (Yang 2025, "CE-U: Cross Entropy Unlearning",
    arXiv:2503.01224).

    At each target position the target distribution is the model's own prediction with the true
    token removed, ``q = softmax(z.detach())`` with ``z_{y_t}`` set to ``-inf``; the loss is the
    cross-entropy ``-sum_v q_v log softmax(z)_v``, mean over positions. Its gradient with respect to
    the logits is ``softmax(z) - q``: bounded, unlike gradient ascent's. The target is a constant.

    Args:
        skip_first: leave out the first ``skip_first`` real target tokens of each sequence (the
            paper's training settings skip the first answer token: ``1``).
    """
    if isinstance(skip_first, bool) or not isinstance(skip_first, int) or skip_first < 0:
        raise ValueError(f"ce_u skip_first must be an int >= 0, got {skip_first!r}")
    shifted_logits, shifted_labels, mask = shift_for_next_token(logits, labels)
    keep = mask & (mask.cumsum(dim=1) > skip_first)
    if not keep.any():
        raise ValueError(
            f"no target tokens left after skipping the first {skip_first} of each sequence; "
            "lower skip_first or use longer forget documents"
        )
    z = shifted_logits[keep].float()  # [n, vocab]: only the kept positions
    y = shifted_labels[keep].unsqueeze(-1)
    target = F.softmax(z.detach().scatter(-1, y, float("-inf")), dim=-1)
    return -(target * F.log_softmax(z, dim=-1)).sum(dim=-1).mean()


def logit_flatness(logits: Tensor, labels: Tensor) -> Tensor:
    """Logit-margin flattening, the forget term of PDU (Entesari et al., NeurIPS 2025,
    "Constrained Entropic Unlearning: A Primal-Dual Framework for Large Language Models",
    arXiv:2506.05314).

    ``mean_t (max_v z_{t,v} - mean_v z_{t,v})^2``: zero exactly when the prediction is uniform; it
    needs no softmax and its gradient does not vanish near uniform, unlike the entropy. The positions
    ``t`` are the predictions of real target tokens (after the shift, as everywhere in this module);
    the label values themselves are not used. (open-unlearning's PDU masks the unshifted logits
    with the unshifted labels instead: the same positions moved by one.)
    """
    shifted_logits, _, mask = shift_for_next_token(logits, labels)
    if not mask.any():
        raise ValueError(
            "batch has no real target tokens (every label is -100); check the data's labels "
            "or drop empty documents"
        )
    z = shifted_logits[mask].float()  # [n, vocab]: only the target positions
    return (z.amax(dim=-1) - z.mean(dim=-1)).square().mean()


def dual_update(
    lam: Tensor | float, retain_loss: Tensor | float, *, bound: float, lr: float
) -> Tensor:
    """One projected dual-ascent step of PDU (Entesari et al. 2025, arXiv:2506.05314).

    ``max(0, lam + lr * (retain_loss - bound))``: the retain weight ``lam`` (the Lagrange
    multiplier of the constraint ``retain_loss <= bound``) grows while the constraint is violated
    and shrinks, down to 0, while it holds. Computed in ``lam``'s dtype (float64 for a Python
    float); nothing here carries a gradient.
    """
    _check_non_negative("dual lr", lr)
    lam = lam.detach() if isinstance(lam, Tensor) else torch.tensor(float(lam), dtype=torch.float64)
    if not lam.is_floating_point():
        lam = lam.double()
    loss = torch.as_tensor(retain_loss, device=lam.device).detach().to(lam.dtype)
    return (lam + lr * (loss - bound)).clamp_min(0.0)


def banded_target_loss(value: Tensor, target: Tensor, tolerance: float | Tensor) -> Tensor:
    """Two-sided, bounded-below loss pulling each ``value`` into ``[target - tol, target + tol]``.

    Per row (a forget window and its document's target log-likelihood), with the gap
    ``g = value - target`` and the distance outside the band ``x = max(|g| - tol, 0)``::

        loss = x**2 / (2 tol)    if x <= tol
               x - tol / 2       if x >  tol            (a Huber function of x, width tol)
        d loss / d value = sign(g) * min(x / tol, 1)

    So a remembered document (``value`` above its band) is pushed down, an overshot one (below
    it) pulled back up, one inside the band contributes nothing; far from the band the gradient
    is that of gradient ascent (descent) on the document's mean token log-likelihood, scaled by 1,
    and it fades linearly to 0 over the last ``tol`` before the band, so a document lands in its
    band instead of being pushed through it. The loss is 0 at best (bounded below, unlike
    gradient ascent) and continuous with a continuous gradient. With ``tol = 0`` it is
    ``|g|`` (the gradient ``sign(g)``).

    Args:
        value: ``[rows]`` the current mean token log-likelihood of each row (with its graph).
        target: ``[rows]`` each row's target (no gradient).
        tolerance: the band's half-width ``tol >= 0`` (a float, or ``[rows]``).

    Returns:
        ``[rows]`` the loss of each row.
    """
    if value.shape != target.shape:
        raise ValueError(
            f"value and target must have the same shape, got {tuple(value.shape)} and "
            f"{tuple(target.shape)}"
        )
    tol = torch.as_tensor(tolerance, dtype=value.dtype, device=value.device)
    if bool((tol < 0).any()) or not bool(torch.isfinite(tol).all()):
        raise ValueError(f"tolerance must be finite and >= 0, got {tolerance}")
    outside = ((value - target.detach()).abs() - tol).clamp_min(0.0)
    if bool((tol == 0).all()):
        return outside
    quadratic = outside.square() / (2.0 * tol.clamp_min(torch.finfo(value.dtype).tiny))
    return torch.where(outside <= tol, quadratic, outside - tol / 2.0)
