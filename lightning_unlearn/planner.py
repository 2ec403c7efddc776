"""Memory planner: will this model, method and trainer preset fit on these GPUs?

``lightning-unlearn plan --model llama-7b --method ga_kl --strategy deepspeed_zero3 --gpus 8``
prints the estimated memory per GPU and per node's CPU RAM, split into weights, gradients,
optimizer states, the frozen reference model, activations and logits, and a fits / does-not-fit
verdict. It is arithmetic on the model's config (parameters counted on the meta device, nothing is
downloaded or allocated), so it runs in a second for any size.

Bytes per parameter (the conventions of DeepSpeed's own estimators, which the tests check against):

* DeepSpeed with ``bf16-mixed``: bf16 weights (2) and gradients (2); the optimizer holds fp32
  master weights (4), AdamW's two moments (8) and an fp32 gradient partition (4) = 16.
* torch engines (single GPU, DDP, FSDP) with ``bf16-mixed``: fp32 weights (4) and gradients (4),
  AdamW moments (8); autocast runs the matmuls in bf16.
* Frozen weights (the reference copy, the LoRA base) cost only their weights.
* ``--dtype bf16`` (the method's ``dtype: bf16``: the model and its reference loaded in bf16) under
  the torch engines: bf16 weights (2) and gradients (2), AdamW's moments in bf16 (4), as torch's
  AdamW keeps them in the parameters' dtype. DeepSpeed's layout does not change.
* A method that trains some modules only (RMU: ``trainable_layers`` x ``trainable_modules``) has
  gradients and optimizer states for those parameters only; every weight is still held.

Activations are an estimate for Llama-style decoder layers with fused (flash / SDPA) attention:
about ``20 h + 4 kv + 8 i`` bytes per token per layer in bf16 (h hidden size, kv key/value width,
i MLP width), after Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
Transformer Models") adapted to RMSNorm + SwiGLU. With activation checkpointing only each layer's
input (2 h bytes per token) is kept, plus one layer recomputed at a time. Logits count ``10 V``
bytes per token (bf16 logits, their fp32 copy and log-softmax), ``+6 V`` for the reference's.
Expect +-30% on activations; weights / gradients / optimizer states are exact up to allocator
fragmentation, for which a fixed runtime overhead is added.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .methods import METHODS as BUILTIN_METHODS

GIB = 1024**3
#: CUDA context, NCCL buffers, allocator fragmentation: a flat allowance per GPU
RUNTIME_OVERHEAD_BYTES = 2 * GIB


# ---------------------------------------------------------------------- models
#: well-known architectures, built in code so planning needs no network (published configs)
_MODEL_COLUMNS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "tie_word_embeddings",
)
KNOWN_MODELS: dict[str, dict[str, Any]] = {
    name: dict(zip(_MODEL_COLUMNS, row))
    for name, *row in [
        # name, hidden, intermediate, layers, heads, key-value heads, vocabulary, tied embeddings
        # meta-llama/Llama-2-7b-hf, -13b-hf, -70b-hf
        ("llama-7b", 4096, 11008, 32, 32, 32, 32000, False),
        ("llama-13b", 5120, 13824, 40, 40, 40, 32000, False),
        ("llama-70b", 8192, 28672, 80, 64, 8, 32000, False),
        # meta-llama/Llama-3.2-1B
        ("llama3.2-1b", 2048, 8192, 16, 32, 8, 128256, True),
        # mistralai/Mistral-7B-v0.1 (and its fine-tunes: zephyr-7b-beta, WMDP's RMU model)
        ("mistral-7b", 4096, 14336, 32, 32, 8, 32000, False),
        # meta-llama/Meta-Llama-3-8B
        ("llama3-8b", 4096, 14336, 32, 32, 8, 128256, False),
        # HuggingFaceTB/SmolLM2-135M
        ("smollm2-135m", 576, 1536, 30, 9, 3, 49152, True),
    ]
}


def load_model_config(model: str):
    """A transformers config from a known name (``llama-7b``...), a local directory, or a hub id."""
    from transformers import AutoConfig, LlamaConfig

    key = model.lower()
    if key in KNOWN_MODELS:
        return LlamaConfig(**{"tie_word_embeddings": False, **KNOWN_MODELS[key]})
    path = Path(os.path.expanduser(model))
    if path.suffix == ".gguf":
        raise ValueError(
            f"--model '{model}' is a GGUF file: pass the folder of a Hugging Face checkpoint, a hub "
            f"id, or one of {sorted(KNOWN_MODELS)}"
        )
    if path.is_dir() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"--model directory '{model}' has no config.json")
    try:
        return AutoConfig.from_pretrained(str(path) if path.exists() else model)
    except (OSError, ValueError) as err:
        raise ValueError(
            f"could not read a model config for --model '{model}' ({err}); pass a local checkpoint "
            f"directory, a hub id (needs the network), or one of {sorted(KNOWN_MODELS)}"
        ) from err


@dataclass(frozen=True)
class ModelSize:
    """Parameter counts of one model, from its config."""

    total: int
    largest_layer: int  # most parameters held directly by one module (DeepSpeed's definition)
    lora: int  # LoRA adapter parameters (0 without LoRA)
    num_layers: int
    hidden: int
    intermediate: int
    kv_width: int
    vocab: int


_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def model_size(config, *, lora_rank: int | None = None) -> ModelSize:
    """Count parameters by building the model on the meta device (no memory, no download)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    seen: dict[int, int] = {}
    for p in model.parameters():
        seen[id(p)] = p.numel()  # tied weights counted once
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    lora = 0
    if lora_rank:
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in _LORA_TARGETS:
                lora += lora_rank * (module.in_features + module.out_features)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = text.hidden_size
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    return ModelSize(
        total=sum(seen.values()),
        largest_layer=largest,
        lora=lora,
        num_layers=text.num_hidden_layers,
        hidden=hidden,
        intermediate=getattr(text, "intermediate_size", 4 * hidden),
        kv_width=kv_heads * head_dim,
        vocab=text.vocab_size,
    )


# ---------------------------------------------------------------------- methods
@dataclass(frozen=True)
class MethodNeeds:
    """What a method's configuration keeps in memory besides the trained model (read from an
    instance of its class: :attr:`UnlearningModule.uses_retain` / ``needs_reference``)."""

    name: str
    uses_retain: bool  # a retain batch is forwarded in the same step
    reference: bool  # a frozen copy of the original model (none with LoRA)
    # the decoder layers and the submodules in them that train (RMU); None: every parameter
    trainable_layers: tuple[int, ...] | None = None
    trainable_modules: tuple[str, ...] | None = None


#: short names of the shipped methods and the class each names (from ``methods.METHODS``, the one
#: list; a dotted class path of your own subclass works as well)
METHODS: dict[str, str] = {short: cls.__name__ for short, cls in BUILTIN_METHODS.items()}
#: options a class cannot be built without (they do not change what it holds in memory)
REQUIRED_OPTIONS: dict[str, dict[str, Any]] = {"PrimalDualUnlearning": {"retain_bound": 1.0}}


def method_class(method: str) -> type:
    """The class of a short name (``ga_kl``), a class name (``GradientAscentKL``) or a dotted
    class path (``my_package.MyMethod``)."""
    import importlib

    key = method.lower().replace("-", "_").replace("+", "_")
    name = METHODS.get(key)
    if name is None:
        short = method.rsplit(".", 1)[-1]
        name = next((n for n in METHODS.values() if n.lower() == short.lower()), None)
    if name is not None:
        return next(c for c in BUILTIN_METHODS.values() if c.__name__ == name)
    module, _, attr = method.rpartition(".")
    if module:
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            pass
    raise ValueError(
        f"unknown --method '{method}'; use a short name ({', '.join(METHODS)}), a class name "
        f"({', '.join(METHODS.values())}) or the dotted path of your UnlearningModule subclass"
    )


def method_needs(method: str, *, retain_term: str | None = None) -> MethodNeeds:
    """What ``method`` configured with ``retain_term`` (``None``: its paper's default) needs.

    Read from an instance of the class (no model is loaded: models are built in
    ``configure_model``), so the planner, the CLI's token budget and training always agree.
    """
    cls = method_class(method)
    kwargs = dict(REQUIRED_OPTIONS.get(cls.__name__, {}))
    if retain_term is not None:
        kwargs["retain_term"] = retain_term
    module = cls("<planned model>", **kwargs)
    layers, modules = (getattr(module, a, None) for a in ("trainable_layers", "trainable_modules"))
    return MethodNeeds(
        cls.__name__,
        bool(module.uses_retain),
        bool(module.needs_reference),
        trainable_layers=None if layers is None else tuple(layers),
        trainable_modules=None if modules is None else tuple(modules),
    )


def trainable_parameters(config, method: MethodNeeds) -> int | None:
    """Parameters a method that trains some modules only updates (``None``: every parameter),
    counted on the meta device."""
    if method.trainable_layers is None or method.trainable_modules is None:
        return None
    import torch
    from transformers import AutoModelForCausalLM

    from .methods.rmu import decoder_layers

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    layers = decoder_layers(model)
    bad = [i for i in method.trainable_layers if not 0 <= i < len(layers)]
    if bad:
        raise ValueError(
            f"{method.name} trains decoder layers {bad}, but the model has {len(layers)} "
            f"(0..{len(layers) - 1})"
        )
    prefixes = tuple(m + "." for m in method.trainable_modules)
    return sum(
        p.numel()
        for i in method.trainable_layers
        for name, p in layers[i].named_parameters()
        if name.startswith(prefixes)
    )


def default_backward(layout: StrategyLayout) -> str:
    """The backward order ``UnlearningModule.backward_mode`` picks under a preset: joint under
    DeepSpeed (its engine reduces at every backward) and FSDP, else sequential."""
    return "joint" if layout.engine == "deepspeed" or layout.shard == "full" else "sequential"


# ---------------------------------------------------------------------- strategies
@dataclass(frozen=True)
class StrategyLayout:
    """How a trainer preset places model states (what the planner needs of a preset)."""

    engine: str  # "torch" (fp32 weights + autocast) or "deepspeed" (bf16 weights, fp32 master)
    shard: str  # "none" (replicated), "zero2" (grads + optimizer), "full" (everything)
    offload_optimizer: bool = False
    offload_params: bool = False


#: the layout of each preset in configs/trainer/ (a test checks that they agree)
PRESETS: dict[str, StrategyLayout] = {
    "cpu": StrategyLayout("torch", "none"),
    "single_gpu": StrategyLayout("torch", "none"),
    "ddp": StrategyLayout("torch", "none"),
    "fsdp": StrategyLayout("torch", "full"),
    "deepspeed_zero2": StrategyLayout("deepspeed", "zero2"),
    "deepspeed_zero3": StrategyLayout("deepspeed", "full"),
    "deepspeed_zero3_offload": StrategyLayout("deepspeed", "full", offload_optimizer=True),
    "deepspeed_zero3_offload_params": StrategyLayout(
        "deepspeed", "full", offload_optimizer=True, offload_params=True
    ),
    "deepspeed_zero3_cpu": StrategyLayout("deepspeed", "full"),
    "multinode": StrategyLayout("deepspeed", "full"),
}


def strategy_layout(strategy: str) -> StrategyLayout:
    """A preset name (``deepspeed_zero3``) or the path of a trainer YAML."""
    key = Path(strategy).stem if strategy.endswith((".yaml", ".yml")) else strategy
    key = key.lower().replace("-", "_")
    if key in PRESETS and not Path(strategy).is_file():
        return PRESETS[key]
    if Path(strategy).is_file():
        return layout_from_yaml(strategy)
    raise ValueError(
        f"unknown --strategy '{strategy}'; use a preset name ({', '.join(PRESETS)}) or the path "
        "of a trainer YAML such as configs/trainer/deepspeed_zero3.yaml"
    )


def layout_from_yaml(path: str | os.PathLike) -> StrategyLayout:
    """Read the placement of model states from a trainer YAML (``trainer.strategy``)."""
    import yaml

    trainer = (yaml.safe_load(Path(path).read_text()) or {}).get("trainer") or {}
    strategy = trainer.get("strategy")
    if strategy is None or isinstance(strategy, str):
        name = (strategy or "").lower()
        if "deepspeed" in name:
            stage = 3 if "3" in name else 2
            return StrategyLayout("deepspeed", "full" if stage == 3 else "zero2", "offload" in name)
        return StrategyLayout("torch", "full" if "fsdp" in name else "none")
    class_path = strategy.get("class_path", "")
    args = strategy.get("init_args") or {}
    if "DeepSpeed" in class_path:
        stage = int(args.get("stage", 2))
        return StrategyLayout(
            "deepspeed",
            "full" if stage == 3 else "zero2" if stage in (1, 2) else "none",
            offload_optimizer=bool(args.get("offload_optimizer", False)),
            offload_params=bool(args.get("offload_parameters", False)),
        )
    if "FSDP" in class_path:
        return StrategyLayout(
            "torch", "zero2" if args.get("sharding_strategy") == "SHARD_GRAD_OP" else "full"
        )
    return StrategyLayout("torch", "none")


# ---------------------------------------------------------------------- the plan
@dataclass
class MemoryPlan:
    """Bytes per GPU and per node's CPU RAM, by component, and the verdict."""

    gpu: dict[str, int]
    cpu: dict[str, int]
    gpu_memory: int
    cpu_memory: int | None
    notes: list[str] = field(default_factory=list)

    @property
    def gpu_total(self) -> int:
        return sum(self.gpu.values())

    @property
    def cpu_total(self) -> int:
        return sum(self.cpu.values())

    @property
    def fits(self) -> bool:
        return self.gpu_total <= self.gpu_memory and (
            self.cpu_memory is None or self.cpu_total <= self.cpu_memory
        )


def activation_bytes_per_token(size: ModelSize, *, checkpointing: bool) -> int:
    """Saved activations per token for the whole decoder stack (bf16), see the module docstring."""
    per_layer = 20 * size.hidden + 4 * size.kv_width + 8 * size.intermediate
    if checkpointing:
        return size.num_layers * 2 * size.hidden + per_layer
    return size.num_layers * per_layer


def plan_memory(
    size: ModelSize,
    *,
    method: MethodNeeds,
    layout: StrategyLayout,
    gpus: int = 1,
    nodes: int = 1,
    lora: bool = False,
    seq_len: int = 2048,
    micro_batch: int = 1,
    gradient_checkpointing: bool = False,
    gpu_memory_gib: float = 80.0,
    cpu_memory_gib: float | None = None,
    backward: str | None = None,
    trainable: int | None = None,
    dtype: str = "fp32",
) -> MemoryPlan:
    """Estimate memory for one training step; see the module docstring for the conventions.

    ``backward`` is the method's backward order: ``"joint"`` holds the forget and the retain
    sequence's activations and logits together until one backward; ``"sequential"`` (the
    library's default, except under DeepSpeed and FSDP: :func:`default_backward`) back-propagates
    the forget term first, so one sequence's are alive at a time.

    ``trainable``: the parameters a method that trains some modules only updates
    (:func:`trainable_parameters`; ``None``: all). ``dtype``: ``"bf16"`` when the method loads the
    model in bf16 (its ``dtype`` option), which changes the torch engines' bytes per parameter.
    """
    backward = backward or default_backward(layout)
    if backward not in ("joint", "sequential"):
        raise ValueError(f"--backward must be 'joint' or 'sequential', got {backward!r}")
    if gpus < 1 or nodes < 1:
        raise ValueError(f"--gpus and --nodes must be >= 1, got gpus={gpus}, nodes={nodes}")
    if lora and size.lora == 0:
        raise ValueError("lora=True but the model has no LoRA target modules (q_proj, v_proj...)")
    if dtype not in ("fp32", "bf16"):
        raise ValueError(f"--dtype must be 'fp32' or 'bf16', got {dtype!r}")
    world = gpus * nodes
    deepspeed = layout.engine == "deepspeed"
    w, g, o = (2, 2, 16) if deepspeed else (2, 2, 4) if dtype == "bf16" else (4, 4, 8)
    part = trainable
    trainable = size.lora if lora else size.total if part is None else part
    # the weights held but not trained: the base under LoRA adapters, the frozen modules
    frozen_base = size.total if lora else size.total - trainable
    reference = size.total if method.reference and not lora else 0

    def split(n_bytes: int, sharded: bool) -> int:
        return math.ceil(n_bytes / world) if sharded else n_bytes

    weights_sharded = layout.shard == "full"
    states_sharded = layout.shard in ("zero2", "full")
    gpu: dict[str, int] = {}
    cpu: dict[str, int] = {}
    weights = split((trainable + frozen_base) * w, weights_sharded)
    ref = split(reference * w, weights_sharded)
    grads = split(trainable * g, states_sharded)
    optim = split(trainable * o, states_sharded)
    if layout.offload_params:
        cpu["weights (offloaded)"] = weights * gpus
        cpu["reference model (offloaded)"] = ref * gpus
        weights = ref = 0
    gpu["weights"] = weights
    gpu["gradients"] = grads
    if layout.offload_optimizer:
        # DeepSpeed keeps the fp32 master, moments and fp32 gradients in RAM; bf16 grads stay
        cpu["optimizer states (offloaded)"] = optim * gpus
        gpu["optimizer states"] = 0
        if layout.offload_params:
            gpu["gradients"] = 0  # reduced straight into the CPU partition
    else:
        gpu["optimizer states"] = optim
    gpu["reference model"] = ref
    if weights_sharded:
        # one layer gathered at a time (ZeRO-3: DeepSpeed counts 4 bytes x largest layer)
        gpu["gathered layer buffer"] = 4 * size.largest_layer
    # joint: forget and retain graphs alive together; sequential: one at a time
    passes = 2 if method.uses_retain and backward == "joint" else 1
    tokens = micro_batch * seq_len
    gpu["activations"] = (
        passes * tokens * activation_bytes_per_token(size, checkpointing=gradient_checkpointing)
    )
    gpu["logits"] = passes * tokens * size.vocab * 10 + (
        tokens * size.vocab * 6 if method.reference else 0
    )
    gpu["runtime overhead"] = RUNTIME_OVERHEAD_BYTES
    # loading: ZeRO-3 loads into partitions (one layer at a time per process); others load the
    # whole checkpoint (bf16) in each process before moving it to the GPU
    models_loaded = 1 + (1 if reference else 0)
    per_process = 4 * size.largest_layer if weights_sharded and deepspeed else 2 * size.total
    cpu["checkpoint loading (peak)"] = per_process * models_loaded * gpus
    notes = []
    if part is not None and not lora:
        notes.append(
            f"{method.name} trains {part / 1e6:.1f}M of {size.total / 1e9:.2f}B parameters (layers "
            f"{list(method.trainable_layers)}, {', '.join(method.trainable_modules)}): gradients "
            "and optimizer states for those only"
        )
    if method.reference and lora:
        notes.append("reference = base weights with LoRA adapters disabled: no second copy")
    elif method.reference:
        where = "sharded like the model" if weights_sharded else "a full copy per GPU"
        notes.append(f"reference model: frozen copy of the original weights, {where}")
    return MemoryPlan(
        gpu=gpu,
        cpu=cpu,
        gpu_memory=int(gpu_memory_gib * GIB),
        cpu_memory=None if cpu_memory_gib is None else int(cpu_memory_gib * GIB),
        notes=notes,
    )


def deepspeed_estimate(
    size: ModelSize, layout: StrategyLayout, *, gpus: int, nodes: int
) -> tuple[int, int] | None:
    """DeepSpeed's own (cpu bytes per node, gpu bytes) model-states estimate, full fine-tuning only.

    ``additional_buffer_factor`` is 1 so the figures compare with :func:`plan_memory`'s states.
    """
    try:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs
    except Exception:  # noqa: BLE001 - deepspeed missing or its accelerator fails to import
        return None
    if layout.engine != "deepspeed":
        return None
    if layout.shard == "zero2":
        return estimate_zero2_model_states_mem_needs(
            size.total,
            gpus,
            nodes,
            cpu_offload=layout.offload_optimizer,
            additional_buffer_factor=1.0,
        )
    if layout.shard == "full":
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            size.total,
            size.largest_layer,
            gpus,
            nodes,
            cpu_offload=layout.offload_optimizer,
            cpu_offload_params=layout.offload_params,
            zero_init=True,
            additional_buffer_factor=1.0,
        )
        return cpu, gpu
    return None


def format_plan(plan: MemoryPlan, *, title: str, reference: tuple[int, int] | None = None) -> str:
    def gib(n: int) -> str:
        return f"{n / GIB:9.2f} GiB"

    lines = [title, "", "per GPU"]
    lines += [f"  {name:<30}{gib(value)}" for name, value in plan.gpu.items()]
    lines += [
        f"  {'total':<30}{gib(plan.gpu_total)}   (of {plan.gpu_memory / GIB:.0f} GiB)",
        "",
        "CPU RAM per node",
    ]
    lines += [f"  {name:<30}{gib(value)}" for name, value in plan.cpu.items()]
    cap = f"   (of {plan.cpu_memory / GIB:.0f} GiB)" if plan.cpu_memory is not None else ""
    lines.append(f"  {'total':<30}{gib(plan.cpu_total)}{cap}")
    if reference is not None:
        lines += [
            "",
            f"DeepSpeed's estimator (model states only, full fine-tuning): GPU {gib(reference[1]).strip()}, CPU {gib(reference[0]).strip()}",
        ]
    lines += [""] + [f"note: {n}" for n in plan.notes]
    over = plan.gpu_total / plan.gpu_memory
    verdict = "FITS" if plan.fits else "DOES NOT FIT"
    lines.append(f"verdict: {verdict} (GPU use {over:.0%} of {plan.gpu_memory / GIB:.0f} GiB)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-unlearn plan",
        description="Estimate per-GPU and CPU memory of an unlearning run, and whether it fits.",
    )
    parser.add_argument(
        "--model",
        required=True,
        help=f"local checkpoint dir, hub id, or one of {', '.join(KNOWN_MODELS)}",
    )
    parser.add_argument(
        "--method", default="ga_kl", help=f"short name ({', '.join(METHODS)}) or class name"
    )
    parser.add_argument(
        "--retain-term",
        default=None,
        choices=["none", "nll", "kl"],
        help="the method's retain term (default: its paper's)",
    )
    parser.add_argument(
        "--backward",
        default=None,
        choices=["joint", "sequential"],
        help="backward order (default: sequential; joint under DeepSpeed and FSDP)",
    )
    parser.add_argument(
        "--strategy",
        default="deepspeed_zero3",
        help=f"preset ({', '.join(PRESETS)}) or a trainer YAML",
    )
    parser.add_argument("--gpus", type=int, default=1, help="GPUs per node (Trainer devices)")
    parser.add_argument("--nodes", type=int, default=1, help="machines (Trainer num_nodes)")
    parser.add_argument(
        "--lora", action="store_true", help="train LoRA adapters (reference = adapters off)"
    )
    parser.add_argument("--lora-rank", type=int, default=8, help="LoRA r (LoraSettings default 8)")
    parser.add_argument("--seq-len", type=int, default=2048, help="tokens per sequence")
    parser.add_argument("--micro-batch", type=int, default=1, help="sequences per GPU per step")
    parser.add_argument(
        "--gradient-checkpointing", action="store_true", help="recompute activations"
    )
    parser.add_argument(
        "--dtype",
        default="fp32",
        choices=["fp32", "bf16"],
        help="the dtype the method loads the model in (model.init_args.dtype; torch engines only)",
    )
    parser.add_argument("--gpu-memory", type=float, default=80.0, help="GiB per GPU (default 80)")
    parser.add_argument(
        "--cpu-memory", type=float, default=None, help="GiB of RAM per node (unchecked if unset)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """``lightning-unlearn plan``: print the memory plan; exit 0 if it fits, 1 if not."""
    args = build_parser().parse_args(argv)
    config = load_model_config(args.model)
    size = model_size(config, lora_rank=args.lora_rank if args.lora else None)
    method = method_needs(args.method, retain_term=args.retain_term)
    layout = strategy_layout(args.strategy)
    trainable = None if args.lora else trainable_parameters(config, method)
    plan = plan_memory(
        size,
        method=method,
        layout=layout,
        gpus=args.gpus,
        nodes=args.nodes,
        lora=args.lora,
        seq_len=args.seq_len,
        micro_batch=args.micro_batch,
        gradient_checkpointing=args.gradient_checkpointing,
        gpu_memory_gib=args.gpu_memory,
        cpu_memory_gib=args.cpu_memory,
        backward=args.backward,
        trainable=trainable,
        dtype=args.dtype,
    )
    reference = (
        None
        if args.lora or trainable is not None
        else deepspeed_estimate(size, layout, gpus=args.gpus, nodes=args.nodes)
    )
    title = (
        f"{args.model}: {size.total / 1e9:.2f}B parameters"
        + (f" ({size.lora / 1e6:.1f}M LoRA)" if args.lora else "")
        + (f" ({trainable / 1e6:.1f}M trained)" if trainable is not None else "")
        + (", bf16 weights" if args.dtype == "bf16" and layout.engine == "torch" else "")
        + f", {method.name}, {args.strategy}, {args.gpus} GPU(s) x {args.nodes} node(s), "
        f"micro-batch {args.micro_batch} x {args.seq_len} tokens"
        + (", activation checkpointing" if args.gradient_checkpointing else "")
        + f", {args.backward or default_backward(layout)} backward"
    )
    print(format_plan(plan, title=title, reference=reference))
    return 0 if plan.fits else 1


if __name__ == "__main__":
    sys.exit(main())
