"""Weight-only round-to-nearest (RTN) quantization: does the forgetting survive deployment?

Zhang et al. 2025, "Catastrophic Failure of LLM Unlearning via Quantization" (ICLR 2025,
arXiv:2410.16454), show that an unlearned model quantized to 4 bits recovers much of the
"forgotten" knowledge: unlearning with a small learning rate and a utility constraint moves the
weights by less than one quantization step, so the unlearned and the original model round to
the same grid. This module simulates that deployment ("fake" quantization): every weight is
replaced by its dequantized value, the model stays a float model and runs anywhere.

What is implemented (:func:`quantize_weights_rtn`): per-group asymmetric min–max RTN with an
integer zero point, the calibration-free baseline of GPTQ (Frantar et al. 2023) and AWQ
(Lin et al. 2024, "RTN" rows, e.g. INT4 g128). For each output row, each group of
``group_size`` consecutive input weights ``w`` gets::

    scale = (max(w) - min(w)) / (2**bits - 1)
    zero  = round(-min(w) / scale)                       # an integer
    q     = clamp(round(w / scale) + zero, 0, 2**bits - 1)
    w_hat = (q - zero) * scale

so a group holds at most ``2**bits`` values and ``|w - w_hat| <= scale / 2``. Differences from
the tools used by Zhang et al.: GPTQ's RTN widens the range to include 0 and AWQ clamps the
zero point into ``[0, 2**bits - 1]`` (both only matter for a group whose weights all have one
sign); GPTQ/AWQ proper also use calibration data, which RTN does not; their released code loads
models through bitsandbytes, whose 4-bit default is a symmetric absmax FP4 code per block of 64
and whose 8-bit (LLM.int8) is per-row absmax with outliers kept in 16 bits. Per-output-channel
quantization is ``group_size=in_features``.

Which layers (:func:`quantize_model`): every ``nn.Linear`` (and transformers' ``Conv1D`` of
GPT-2, whose weight is stored transposed) except the output layer ``lm_head``. Input embeddings,
and an output layer tied to them (``tie_word_embeddings``), stay in full precision by default:
weight-only RTN/GPTQ/AWQ tooling (AutoGPTQ, AutoAWQ, bitsandbytes through transformers) keeps
``lm_head`` and the embeddings unquantized. ``include_embeddings=True`` quantizes each embedding
matrix too (groups along the hidden dimension), once, so a tie is kept.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["quantize_model", "quantize_weights_rtn"]


def _check_options(bits: int, group_size: int) -> None:
    if not isinstance(bits, int) or not 1 <= bits <= 16:
        raise ValueError(f"bits must be an integer from 1 to 16, got {bits!r}")
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(
            f"group_size must be a positive integer (the input width for one group per row), "
            f"got {group_size!r}"
        )


def _rtn_groups(groups: Tensor, levels: int) -> Tensor:
    """Quantize-dequantize the last dimension of ``groups`` on ``levels + 1`` evenly spaced values."""
    low = groups.amin(-1, keepdim=True)
    high = groups.amax(-1, keepdim=True)
    scale = (high - low) / levels
    # A constant group w gets scale |w| (1 when w = 0) instead of 0: zero point -sign(w), q = 0,
    # and w comes back exactly, without dividing by zero.
    scale = torch.where(scale == 0, torch.where(low == 0, torch.ones_like(low), low.abs()), scale)
    # The zero point is an integer but not clamped to [0, levels]: a group of one sign keeps its
    # full min-max grid (AWQ clamps it; GPTQ widens the range to include 0 instead).
    zero = torch.round(-low / scale)
    q = torch.clamp(torch.round(groups / scale) + zero, 0, levels)
    return (q - zero) * scale


def quantize_weights_rtn(weight: Tensor, *, bits: int, group_size: int = 64) -> Tensor:
    """Round-to-nearest, asymmetric min–max quantization of a linear weight, dequantized.

    Each output row is cut into groups of ``group_size`` consecutive input weights (the last
    group is shorter when ``in_features`` is not a multiple); each group gets its own scale and
    integer zero point from its min and max (see the module docstring for the formula and how it
    compares with GPTQ/AWQ/bitsandbytes).

    Args:
        weight: a 2-D ``[out_features, in_features]`` weight (an embedding's
            ``[vocab, hidden]`` works the same way, grouped along ``hidden``).
        bits: bits per weight: ``2**bits`` levels per group (e.g. 4 or 8).
        group_size: input weights sharing one scale and zero point.

    Returns:
        A new tensor, same shape, dtype and device as ``weight``, holding the dequantized values
        (computed in float32, or float64 for a float64 weight). ``weight`` is not modified.

    Raises:
        ValueError: ``weight`` is not a 2-D floating-point tensor of finite values, or ``bits``/
            ``group_size`` are out of range.
    """
    _check_options(bits, group_size)
    if weight.ndim != 2 or not weight.is_floating_point():
        raise ValueError(
            "quantize_weights_rtn takes a 2-D floating-point [out_features, in_features] weight, "
            f"got shape {tuple(weight.shape)} and dtype {weight.dtype}"
        )
    compute_dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    w = weight.detach().to(compute_dtype)
    if not torch.isfinite(w).all():
        raise ValueError("the weight holds NaN or infinite values; RTN needs finite min and max")
    rows, columns = w.shape
    levels = 2**bits - 1
    full = columns - columns % group_size
    parts = []
    if full:
        parts.append(
            _rtn_groups(w[:, :full].reshape(rows, -1, group_size), levels).reshape(rows, -1)
        )
    if full < columns:
        parts.append(_rtn_groups(w[:, full:], levels))
    return torch.cat(parts, dim=1).to(weight.dtype)


def _is_conv1d(module: nn.Module) -> bool:
    """transformers' ``Conv1D`` (GPT-2): a linear layer with a ``[in, out]`` weight."""
    return type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None


def _matches(name: str, patterns: Sequence[str]) -> bool:
    """Whether a dotted module name contains one of ``patterns`` as whole dotted components."""
    padded = f".{name}."
    return any(f".{p.strip('.')}." in padded for p in patterns if p.strip("."))


def _merged_lora(model: nn.Module) -> nn.Module:
    """``model`` (a copy) with its LoRA adapters merged into the base weights, or ``model`` itself
    when it has none. Quantizing an unmerged LoRA model would quantize each adapter matrix apart
    from the weight it adds to (a deployment quantizes the merged weight)."""
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # pragma: no cover - peft is a dependency
        return model
    if not any(isinstance(m, BaseTunerLayer) for m in model.modules()):
        return model
    if not hasattr(model, "merge_and_unload"):
        raise ValueError(
            "the model to quantize has unmerged LoRA adapter layers and no merge_and_unload(): "
            "merge them first (peft: PeftModel.merge_and_unload()), then quantize the merged model"
        )
    return model.merge_and_unload()


def quantize_model(
    model: nn.Module,
    *,
    bits: int,
    group_size: int = 64,
    skip: Sequence[str] = ("lm_head",),
    include_embeddings: bool = False,
) -> nn.Module:
    """A copy of ``model`` with its linear weights replaced by their RTN-quantized values.

    The original model is never modified: the copy is a ``copy.deepcopy`` (twice the memory for
    a moment), quantized in place, with ties between parameters kept. Biases and norms stay in
    full precision. A peft model's LoRA adapters are merged into the copy first (the merged
    weights are what a deployment quantizes); adapter layers that cannot be merged are refused.

    Args:
        model: any ``nn.Module``, typically a transformers causal LM.
        bits: bits per weight (4 and 8 in Zhang et al. 2025).
        group_size: input weights per scale/zero point (64 here; 128 is the other common
            choice; ``in_features`` gives one group per output row).
        skip: modules left in full precision, matched as whole dotted name components anywhere
            in the qualified name: ``"lm_head"`` matches ``lm_head`` and
            ``base_model.model.lm_head``; ``"layers.0"`` matches everything in the first block.
        include_embeddings: also quantize ``nn.Embedding`` weights (groups along the hidden
            dimension). An output layer tied to the input embedding is then quantized with it,
            once, whatever ``skip`` says, and stays tied. Off by default, like GPTQ/AWQ/
            bitsandbytes tooling.

    Returns:
        The quantized copy, with a ``quantization_report`` attribute::

            {"bits": 4, "group_size": 64, "layers_quantized": 14, "lora_merged": False,
             "parameters_quantized": 57344, "quantized": ["model.layers.0.self_attn.q_proj", ...],
             "skipped": {"lm_head": "in skip", "model.embed_tokens": "embedding ..."}}

        ``parameters_quantized`` counts weight entries, each shared tensor once.

    Raises:
        ValueError: ``bits`` or ``group_size`` out of range, or a weight with NaN/inf values.
    """
    _check_options(bits, group_size)
    copied = copy.deepcopy(model)
    quantized = _merged_lora(copied)
    modules = list(quantized.named_modules())
    embedding_weights = {
        id(m.weight) for _, m in modules if isinstance(m, nn.Embedding) and m.weight is not None
    }
    report: dict[str, Any] = {
        "bits": bits,
        "group_size": group_size,
        "layers_quantized": 0,
        "parameters_quantized": 0,
        "quantized": [],
        "skipped": {},
        "lora_merged": quantized is not copied,
    }
    done: set[int] = set()
    with torch.no_grad():
        for name, module in modules:
            is_embedding = isinstance(module, nn.Embedding)
            transposed = _is_conv1d(module)
            if not (is_embedding or transposed or isinstance(module, nn.Linear)):
                continue
            weight = module.weight
            tied_to_embedding = not is_embedding and id(weight) in embedding_weights
            if is_embedding and not include_embeddings:
                report["skipped"][name] = "embedding (include_embeddings=False)"
                continue
            if tied_to_embedding and not include_embeddings:
                report["skipped"][name] = "tied to the input embedding (include_embeddings=False)"
                continue
            if tied_to_embedding:
                report["skipped"][name] = "tied to the input embedding: quantized with it"
                continue
            if not is_embedding and _matches(name, skip):
                report["skipped"][name] = "in skip"
                continue
            if not weight.is_floating_point():
                report["skipped"][name] = f"weight is {weight.dtype}, already quantized"
                continue
            if id(weight) in done:
                report["skipped"][name] = "shares its weight with a layer already quantized"
                continue
            source = weight.t() if transposed else weight
            new = quantize_weights_rtn(source, bits=bits, group_size=group_size)
            weight.copy_(new.t() if transposed else new)
            done.add(id(weight))
            report["layers_quantized"] += 1
            report["parameters_quantized"] += weight.numel()
            report["quantized"].append(name)
    quantized.quantization_report = report
    return quantized
