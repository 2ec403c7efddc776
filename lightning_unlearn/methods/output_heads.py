"""The KL retain term from hidden states: which architectures qualify, declared, not guessed.

``KL(P_ref || P_theta)`` on a retain batch needs both models' distributions over the vocabulary
at every position. Made from the two ``[batch, seq, vocab]`` logits tensors it holds both at once;
made from the last hidden states and the output layers, chunk by chunk
(:func:`~lightning_unlearn.losses.linear_kl_to_reference`), it holds neither. That is exact only
where the logits are ``head(h)`` of the last hidden state ``h`` and nothing after: no soft-capping
(Gemma 2), no scale (Cohere, Granite).

:data:`LINEAR_HEADS` declares the architectures known to qualify (checked against transformers'
code, and by a test that builds each one: ``logits == head(hidden_states[-1])`` and
``hidden_states[-1]`` is the final norm's output). Every other model takes the one fallback, the
logits path, which is right for any causal LM. So does a declared one whose head is not a plain
``nn.Linear`` (an adapter on it) or whose weight is a ZeRO-3 shard.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ..losses import linear_kl_to_reference
from ..models import model_inputs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputHead:
    """Where an architecture's causal-LM class keeps its last two layers (dotted module paths).

    Args:
        norm: the final norm, whose output is the last entry of ``hidden_states``.
        head: the output projection: the logits are exactly ``head(norm output)``.
    """

    norm: str
    head: str


_DECODER = OutputHead(norm="model.norm", head="lm_head")

#: transformers ``model_type`` -> layout, for the causal-LM classes whose logits are a plain
#: linear map of the last hidden state and whose forward takes ``logits_to_keep``
LINEAR_HEADS: dict[str, OutputHead] = {
    "llama": _DECODER,
    "mistral": _DECODER,
    "mixtral": _DECODER,
    "qwen2": _DECODER,
    "qwen2_moe": _DECODER,
    "qwen3": _DECODER,
    "qwen3_moe": _DECODER,
    "phi3": _DECODER,
    "olmo": _DECODER,
    "olmo2": _DECODER,
    "gemma": _DECODER,
    "smollm3": _DECODER,
    "starcoder2": _DECODER,
    "phi": OutputHead(norm="model.final_layernorm", head="lm_head"),
    "gpt2": OutputHead(norm="transformer.ln_f", head="lm_head"),
    "gpt_neox": OutputHead(norm="gpt_neox.final_layer_norm", head="lm_head"),
}

_reported: set[str] = set()


def declared_head(model: nn.Module) -> nn.Linear | None:
    """``model``'s output layer when its architecture is in :data:`LINEAR_HEADS` (transformers'
    own class, not remote code of the same name) and that layer is a plain, unsharded
    ``nn.Linear``; ``None`` otherwise (the caller then makes the logits)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    layout = LINEAR_HEADS.get(model_type)
    if layout is None or not type(model).__module__.startswith("transformers.models."):
        if model_type not in _reported:
            _reported.add(model_type)
            log.info("%s is not declared in LINEAR_HEADS: KL from the logits", model_type)
        return None
    head = model.get_submodule(layout.head)
    if type(head) is not nn.Linear or hasattr(head.weight, "ds_id"):  # adapter / ZeRO-3 shard
        return None
    return head


def linear_heads(
    model: nn.Module, reference: nn.Module | None
) -> tuple[nn.Linear, nn.Linear] | None:
    """The trained and the reference model's output layers (the trained model's twice when the
    reference is the same module with its adapters disabled), or ``None`` when either model
    needs the logits path."""
    heads = [declared_head(m) for m in (model, reference) if m is not None]
    if any(head is None for head in heads):
        return None
    return heads[0], heads[-1]


def kl_from_hidden_states(
    model: nn.Module,
    reference_output: Callable[..., Any],
    batch: dict[str, Tensor],
    heads: tuple[nn.Linear, nn.Linear],
) -> Tensor:
    """``KL(P_ref || P_theta)`` on ``batch`` from the two models' last hidden states.

    Args:
        model: the trained model (peft-wrapped or not), called with ``batch``'s inputs.
        reference_output: the frozen original's forward on a batch, given extra forward keywords.
        batch: the retain batch (``labels`` mark the positions that count).
        heads: the trained and the reference output layers (:func:`linear_heads`).
    """
    kwargs = {"use_cache": False, "output_hidden_states": True, "logits_to_keep": 1}
    hidden = model(**model_inputs(batch), **kwargs).hidden_states[-1]
    reference = reference_output(batch, output_hidden_states=True, logits_to_keep=1)
    head, reference_head = heads
    return linear_kl_to_reference(
        hidden,
        reference.hidden_states[-1],
        head.weight,
        reference_head.weight,
        batch["labels"],
        bias=head.bias,
        reference_bias=reference_head.bias,
    )
