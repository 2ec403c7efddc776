"""Every YAML under configs/ opens with the command that runs it, and that command parses."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


# placeholders used in the opening commands, and what the test substitutes
PLACEHOLDERS = {
    "<x>.yaml": "demo_ga_gd.yaml",
    "--config configs/experiments/demo_ga_gd.yaml": "--config configs/methods/ga_gd.yaml "
    "--config configs/data/demo.yaml --config configs/experiments/demo_ga_gd.yaml",
}


def _command(path: Path, model_dir: Path) -> list[str]:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# lightning-unlearn ") or (
        first.startswith("# torchrun ") and " -m lightning_unlearn " in first
    ), f"{path} must open with the command that runs it"
    line = first[2:].split("  (")[0].replace("<model dir or hub id>", str(model_dir))
    if "--config configs/methods/" not in line:
        for old, new in PLACEHOLDERS.items():
            line = line.replace(old, new)
    words = shlex.split(line)
    start = words.index(
        "lightning_unlearn" if "lightning_unlearn" in words else "lightning-unlearn"
    )
    return words[start + 1 :]


def test_there_are_configs_of_every_kind():
    kinds = {p.parent.name for p in CONFIGS}
    assert {"methods", "data", "trainer", "experiments"} <= kinds
    names = {p.stem for p in CONFIGS}
    for expected in (
        "cpu",
        "single_gpu",
        "ddp",
        "deepspeed_zero2",
        "deepspeed_zero3",
        "deepspeed_zero3_offload",
        "multinode",
        "paper_arxiv",
        "paper_github",
        "local_files",
        "demo",
        "ga_gd",
        "ga_kl",
        "gradient_ascent",
        "random_labels",
        "adversarial_samples",
        "npo",
        "simnpo",
        "rmu",
        "undial",
        "dpo",
        "whos_harry_potter",
        "wga",
        "satimp",
        "ce_u",
        "pdu",
    ):
        assert expected in names, expected


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_config_is_yaml_and_its_command_parses(path, tiny_model_dir, monkeypatch, capsys):
    from lightning_unlearn.cli import main

    data = yaml.safe_load(path.read_text())
    assert data is None or isinstance(data, dict)
    args = _command(path, tiny_model_dir)
    assert args[0] in ("fit", "validate", "test")
    rel = str(path.relative_to(ROOT))
    assert rel in args, f"{rel}: its opening command must use the file itself"
    monkeypatch.chdir(ROOT)
    code = main([*args, "--print_config"])
    out = capsys.readouterr()
    assert code == 0, [line for line in out.err.splitlines() if "error" in line.lower()][:5]
    printed = yaml.safe_load(out.out)
    assert printed["model"]["class_path"].startswith("lightning_unlearn.")
    assert printed["data"]["class_path"] == "lightning_unlearn.data.UnlearningDataModule"
    assert printed["data"]["init_args"]["forget"] is not None
