"""The package as a user gets it: a wheel built from this checkout, installed into a fresh virtual
environment outside the checkout, carries its configuration presets and runs a tiny ``fit`` from
a copied one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd, cwd, env=None, timeout=600):
    done = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, (cmd, done.stdout[-3000:], done.stderr[-3000:])
    return done.stdout


@pytest.mark.slow
def test_wheel_installs_outside_the_checkout_with_its_presets(
    tmp_path, tiny_model_dir, tiny_corpus_dir
):
    # the checkout's files as a clone has them (no caches, no .venv), built where nothing else is
    source = tmp_path / "source"
    tracked = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], ROOT)
    tracked = tracked.split("\0")
    for name in filter(None, tracked):
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_symlink():
            target.symlink_to(os.readlink(ROOT / name))
        else:
            shutil.copy2(ROOT / name, target)
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", wheels, source], tmp_path)  # fmt: skip
    (wheel,) = wheels.glob("lightning_unlearn-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", venv], tmp_path)
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     tmp_path).strip())  # fmt: skip
    # the dependencies (torch, lightning...) come from this environment's site-packages, as a
    # plain path: its .pth files (the editable install of the checkout) are not processed
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], tmp_path)

    where = _run([python, "-c", "import lightning_unlearn; print(lightning_unlearn.__file__)"],
                 tmp_path).strip()  # fmt: skip
    assert Path(where).resolve().is_relative_to(venv.resolve()), where

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("PYTHONPATH", None)
    listed = _run([bin_dir / "lightning-unlearn", "configs"], tmp_path, env)
    presets = sorted(
        f"{p.parent.name}/{p.stem}"
        for p in (ROOT / "lightning_unlearn" / "configs").glob("*/*.yaml")
    )
    assert len(presets) > 30
    for name in presets:
        assert f"  {name} " in listed, name
    assert str(venv.resolve()) in listed.replace(str(venv), str(venv.resolve()))

    copied = tmp_path / "my-configs"
    _run([bin_dir / "lightning-unlearn", "configs", "--copy", copied], tmp_path, env)
    assert sorted(f"{p.parent.name}/{p.stem}" for p in copied.glob("*/*.yaml")) == presets

    out = tmp_path / "run"
    _run(
        [
            bin_dir / "lightning-unlearn", "fit",
            "--config", copied / "methods" / "gradient_ascent.yaml",
            "--config", copied / "trainer" / "cpu.yaml",
            "--config", copied / "data" / "local_files.yaml",
            "--model.init_args.model_name_or_path", tiny_model_dir,
            "--model.init_args.learning_rate", "1e-3",
            "--data.init_args.forget", tiny_corpus_dir / "forget.jsonl",
            "--data.init_args.retain", "null",
            "--data.init_args.approximate", tiny_corpus_dir / "approximate.jsonl",
            "--data.init_args.general", "null",
            "--data.init_args.max_length", "64",
            "--data.init_args.cache_dir", tmp_path / "cache",
            "--trainer.max_steps", "1", "--trainer.logger", "false",
            "--stop_at_target", "false", "--export", "false", "--output_dir", out,
        ],
        tmp_path,
        env,
    )  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == 1 and report["method"] == "GradientAscent"
