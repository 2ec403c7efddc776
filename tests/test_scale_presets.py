"""Every trainer preset under configs/trainer parses into a Trainer config and builds its strategy."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from jsonargparse import ArgumentParser
from lightning import Trainer

PRESETS = Path(__file__).resolve().parents[1] / "configs" / "trainer"
EXPECTED = {
    "cpu",
    "single_gpu",
    "ddp",
    "fsdp",
    "deepspeed_zero2",
    "deepspeed_zero3",
    "deepspeed_zero3_offload",
    "deepspeed_zero3_cpu",
    "multinode",
}


def parse(name: str):
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(Trainer, "trainer", fail_untyped=False)
    return parser.parse_path(str(PRESETS / f"{name}.yaml")).trainer


def build_strategy(trainer_cfg):
    spec = trainer_cfg.strategy
    module, _, name = spec.class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)(**vars(spec.init_args))


def test_the_preset_set_is_complete():
    assert {p.stem for p in PRESETS.glob("*.yaml")} == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_parses_and_opens_with_its_command(name):
    text = (PRESETS / f"{name}.yaml").read_text()
    first = text.splitlines()[0]
    assert first.startswith("# ") and "configs/trainer/" in text.split("\ntrainer:")[0], first
    cfg = parse(name)
    gpu = name not in ("cpu", "deepspeed_zero3_cpu")
    assert cfg.accelerator == ("gpu" if gpu else "cpu")
    assert cfg.precision == ("bf16-mixed" if gpu else "32-true")


@pytest.mark.parametrize(
    ("name", "stage", "offload_optimizer", "offload_param"),
    [
        ("deepspeed_zero2", 2, False, False),
        ("deepspeed_zero3", 3, False, False),
        ("deepspeed_zero3_offload", 3, True, False),
        ("multinode", 3, False, False),
        ("deepspeed_zero3_cpu", 3, False, False),
    ],
)
def test_deepspeed_presets_give_the_expected_zero_settings(
    name, stage, offload_optimizer, offload_param
):
    from lightning.pytorch.strategies import DeepSpeedStrategy

    from lightning_unlearn.strategies import HFDeepSpeedStrategy

    strategy = build_strategy(parse(name))
    assert isinstance(strategy, DeepSpeedStrategy)
    zero = strategy.config["zero_optimization"]
    assert zero["stage"] == stage
    assert ("offload_optimizer" in zero) is offload_optimizer
    assert ("offload_param" in zero) is offload_param
    if offload_optimizer:
        assert (
            zero["offload_optimizer"]["device"] == "cpu" and zero["offload_optimizer"]["pin_memory"]
        )
    # ZeRO-3 needs transformers told about the partitioning (see HFDeepSpeedStrategy)
    assert isinstance(strategy, HFDeepSpeedStrategy) is (stage == 3)


def test_multinode_preset_spans_nodes():
    cfg = parse("multinode")
    assert cfg.num_nodes == 2 and cfg.devices == 8


def test_fsdp_preset_shards_fully_per_decoder_layer():
    from lightning.pytorch.strategies import FSDPStrategy
    from torch.distributed.fsdp import ShardingStrategy
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    strategy = build_strategy(parse("fsdp"))
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.sharding_strategy == ShardingStrategy.FULL_SHARD
    assert strategy.kwargs["use_orig_params"]  # needed: frozen reference beside trained weights
    assert LlamaDecoderLayer in strategy.kwargs["auto_wrap_policy"]._module_classes


def test_ddp_preset():
    cfg = parse("ddp")
    assert cfg.strategy == "ddp" and cfg.devices == -1


@pytest.mark.parametrize("name", ["cpu", "deepspeed_zero3_cpu"])
def test_cpu_presets_build_a_whole_trainer(name):
    from lightning_unlearn.strategies import CPUDeepSpeedStrategy

    cfg = vars(parse(name))
    strategy = cfg.pop("strategy")
    if not isinstance(strategy, str):
        strategy = build_strategy(parse(name))
    trainer = Trainer(
        strategy=strategy,
        logger=False,
        enable_checkpointing=False,
        **{
            k: v
            for k, v in cfg.items()
            if k in ("accelerator", "devices", "num_nodes", "precision")
        },
    )
    if name == "deepspeed_zero3_cpu":
        assert isinstance(trainer.strategy, CPUDeepSpeedStrategy)
        assert trainer.strategy.root_device.type == "cpu" and trainer.num_devices == 2
        assert trainer.strategy.process_group_backend == "gloo"
