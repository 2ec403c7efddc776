"""Attacks that test whether forgetting lasts: relearning and quantization.

Each attack works on a copy and never modifies the model it attacks. An attack's settings are a
small dataclass whose ``variants(model, datamodule)`` yields ``(name, attacked copy, excluded)``:
the variant's name (``relearn_forget_slice_k4``, ``quantize_4bit``), the attacked copy to score,
and the forget ``doc_index`` values that must *not* be scored (the relearned slice, else empty).
:mod:`.recovery` turns the scores of the attacked unlearned, original and exact-retrain models into
a recovered fraction::

    for attack in (RelearnAttack(data="forget_slice"), QuantizeAttack()):
        for name, attacked, excluded in attack.variants(model, datamodule):
            measurement = workflow.measure_checkpoint(attacked, datamodule)
            values = rescore(measurement.documents, tokens, exclude=excluded)  # the rest only
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from torch import nn

from .quantize import quantize_model, quantize_weights_rtn
from .recovery import (
    FRACTION_METRICS,
    document_target_counts,
    ends_interval,
    forget_log_ppl,
    format_recovered,
    raw_change,
    recovered_fraction,
    rescore,
    restrict_documents,
)
from .relearn import (
    RelearnAttack,
    _unwrap,
    forget_slice,
    relearn,
    slice_batches,
    text_batches,
)
from .run import ATTACK_METRICS, attack_section, attack_verdicts, run_attacks  # noqa: E402

__all__ = [
    "ATTACK_METRICS",
    "FRACTION_METRICS",
    "attack_section",
    "attack_verdicts",
    "run_attacks",
    "QuantizeAttack",
    "RelearnAttack",
    "document_target_counts",
    "ends_interval",
    "forget_log_ppl",
    "forget_slice",
    "format_recovered",
    "quantize_model",
    "quantize_weights_rtn",
    "raw_change",
    "recovered_fraction",
    "relearn",
    "rescore",
    "restrict_documents",
    "slice_batches",
    "text_batches",
]


@dataclass(frozen=True)
class QuantizeAttack:
    """A quantization attack's settings: weight-only round-to-nearest quantization of a copy
    (:func:`~lightning_unlearn.attacks.quantize.quantize_model`), one variant per bit width.

    Every linear layer's weight is quantized per group of ``group_size`` input weights (one scale
    and integer zero point per group, asymmetric min-max). The output layer ``lm_head``, the input
    embeddings and an output layer tied to them (SmolLM2, Llama-3.2-1B tie them) stay in full
    precision unless ``include_embeddings``, as in GPTQ/AWQ/bitsandbytes deployments; with it the
    embedding matrix is quantized (groups along the hidden dimension) once, tie kept.

    Args:
        bits: bit widths, one variant each (Zhang et al. 2025 use 8 and 4).
        group_size: input weights per scale / zero point.
        include_embeddings: also quantize the embeddings (and a tied output layer).
    """

    bits: tuple[int, ...] = (8, 4)
    group_size: int = 64
    include_embeddings: bool = False

    def __post_init__(self) -> None:
        bits = tuple(int(b) for b in self.bits)
        if not bits or any(not 1 <= b <= 16 for b in bits):
            raise ValueError(
                f"QuantizeAttack.bits must be integers from 1 to 16, got {self.bits!r}"
            )
        if not isinstance(self.group_size, int) or self.group_size < 1:
            raise ValueError(f"group_size must be a positive integer, got {self.group_size!r}")
        object.__setattr__(self, "bits", bits)

    @property
    def name(self) -> str:
        return "quantize"

    def variant_names(self) -> list[str]:
        return [f"quantize_{b}bit" for b in self.bits]

    def excluded(self, datamodule: Any = None) -> set[int]:
        """Nothing is held out: every forget document is scored."""
        return set()

    def variants(
        self, model: nn.Module, datamodule: Any = None
    ) -> Iterator[tuple[str, nn.Module, set[int]]]:
        """``("quantize_<bits>bit", quantized copy, set())`` per bit width, one copy at a time
        (each a fresh ``copy.deepcopy``; it carries ``quantization_report``). ``model`` is never
        modified; ``datamodule`` is not used (the interface of every attack)."""
        model = _unwrap(model)
        for bits in self.bits:
            quantized = quantize_model(
                model,
                bits=bits,
                group_size=self.group_size,
                include_embeddings=self.include_embeddings,
            )
            quantized.eval()
            yield f"quantize_{bits}bit", quantized, set()
