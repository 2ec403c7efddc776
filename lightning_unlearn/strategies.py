"""Scaling helpers: a CPU-capable DeepSpeed strategy for smoke runs, and gathering sharded weights.

The trainer presets themselves live as LightningCLI YAML under ``configs/trainer/`` (see
``docs/cluster.md``); this module only holds what YAML cannot express.

``CPUDeepSpeedStrategy`` runs DeepSpeed ZeRO (including stage 3) on CPU processes that talk over
gloo. Lightning's :class:`~lightning.pytorch.strategies.DeepSpeedStrategy` refuses any accelerator but
CUDA; DeepSpeed itself has a CPU accelerator and runs ZeRO-3 with gloo. It exists so that CI (no GPU)
can run the *same* sharded code path as a cluster: parameters partitioned at creation in
``configure_model()``, the frozen reference model sharded by the same engine, export gathering the
shards. It is slow and not meant for real training.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
from lightning.fabric.utilities.seed import reset_seed
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy
from torch import nn


class HFDeepSpeedStrategy(DeepSpeedStrategy):
    """Lightning's DeepSpeed strategy, made aware of transformers' ZeRO-3 loading.

    ``UnlearningModule.configure_model()`` runs inside ``deepspeed.zero.Init`` so that the model and
    its frozen reference are partitioned at creation. ``from_pretrained`` under a bare
    ``zero.Init`` builds empty (partitioned) parameters and then fails to load the checkpoint into
    them ("mismatched sizes"). transformers loads into partitions itself, one layer gathered at a
    time, when it knows ZeRO-3 is on: this strategy registers its DeepSpeed config with
    transformers (``HfDeepSpeedConfig``) for as long as the strategy lives. Every argument is
    that of :class:`~lightning.pytorch.strategies.DeepSpeedStrategy`; use it exactly like it
    (the trainer presets under ``configs/trainer/deepspeed_*.yaml`` do).
    """

    _hf_deepspeed_config: Any = None

    @contextlib.contextmanager
    def model_sharded_context(self) -> Iterator[None]:
        self._init_config_if_needed()
        if self.zero_stage_3:
            # import the model classes before zero.Init patches class creation (its exit would
            # undo a class decorator's __init__: see models.import_causal_lm_class)
            import_classes = getattr(self.lightning_module, "import_model_classes", None)
            if import_classes is not None:
                import_classes()
        if self.zero_stage_3 and self._hf_deepspeed_config is None:
            from transformers.integrations import HfDeepSpeedConfig

            # transformers keeps only a weak reference: hold it here
            self._hf_deepspeed_config = HfDeepSpeedConfig(self.config)
        with super().model_sharded_context():
            yield

    def teardown(self) -> None:
        super().teardown()
        if self._hf_deepspeed_config is not None:
            from transformers.integrations.deepspeed import unset_hf_deepspeed_config

            unset_hf_deepspeed_config()
            self._hf_deepspeed_config = None


class CPUDeepSpeedStrategy(HFDeepSpeedStrategy):
    """DeepSpeed ZeRO on CPU processes (gloo), for smoke tests and CI. Not for real training.

    Use it with ``accelerator="cpu"`` and ``precision="32-true"``; every argument of
    :class:`~lightning.pytorch.strategies.DeepSpeedStrategy` is accepted (``stage``, ``offload_*``,
    ``config``...). Give the DeepSpeed config ``"zero_force_ds_cpu_optimizer": false`` (done here
    by default) so the method's own ``torch.optim.AdamW`` is used instead of DeepSpeed's CPUAdam,
    which needs a C++ build.

    Args:
        process_group_backend: torch.distributed backend; only ``"gloo"`` works on CPU.
        **kwargs: passed to :class:`~lightning.pytorch.strategies.DeepSpeedStrategy`.
    """

    def __init__(self, *, process_group_backend: str = "gloo", **kwargs: Any) -> None:
        # DeepSpeed picks its accelerator once, at first use; without CUDA it would pick CPU
        # anyway, this only makes the choice explicit (and wins over a stray CUDA install)
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        super().__init__(process_group_backend=process_group_backend, **kwargs)

    def setup_environment(self) -> None:
        # skip DeepSpeedStrategy's "CUDA only" check, keep DDPStrategy's setup
        DDPStrategy.setup_environment(self)

    def setup_distributed(self) -> None:
        # DeepSpeedStrategy.setup_distributed minus the CUDA device-index validation
        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    @property
    def root_device(self) -> torch.device:
        # DeepSpeed reads the device index (``device_rank``); a bare "cpu" device has none
        return torch.device("cpu", self.local_rank)

    def _init_config_if_needed(self) -> None:
        first = not self._config_initialized
        super()._init_config_if_needed()
        if first and isinstance(self.config, dict):
            self.config.setdefault("zero_force_ds_cpu_optimizer", False)


# ---------------------------------------------------------------------- sharded parameters
def is_zero3_partitioned(module: nn.Module) -> bool:
    """True when ``module`` holds DeepSpeed ZeRO-3 partitioned parameters."""
    return any(hasattr(p, "ds_id") for p in module.parameters())


def _rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


@contextlib.contextmanager
def gathered_parameters(module: nn.Module) -> Iterator[bool]:
    """Make ``module``'s full weights visible; yield whether this process should write them.

    Under ZeRO-3 every rank must enter (the gather is collective); inside the block rank 0 sees
    the full tensors and the caller writes on rank 0 only. Unsharded modules are yielded as they
    are, and every process may write (DDP ranks hold identical weights; export from one).
    """
    if not is_zero3_partitioned(module):
        yield _rank() == 0
        return
    import deepspeed

    # modifier_rank=None: read-only gather, nothing is scattered back afterwards
    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
        yield _rank() == 0
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def local_shard_sizes(module: nn.Module) -> dict[str, tuple[int, int]]:
    """``{name: (full numel, numel held by this rank)}`` for each ZeRO-3 partitioned parameter."""
    return {
        name: (int(p.ds_numel), int(p.ds_tensor.numel()))
        for name, p in module.named_parameters()
        if hasattr(p, "ds_numel")
    }


__all__ = [
    "HFDeepSpeedStrategy",
    "CPUDeepSpeedStrategy",
    "gathered_parameters",
    "is_zero3_partitioned",
    "local_shard_sizes",
]
