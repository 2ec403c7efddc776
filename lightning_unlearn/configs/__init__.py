"""The LightningCLI presets installed with the package, and the checks of a run's configuration.

The YAML files next to this module (``trainer/``, ``methods/``, ``data/``, ``experiments/``) are
package data: they are installed with the wheel, so ``lightning-unlearn configs`` lists them and
``lightning-unlearn configs --copy DIR`` writes them out on any machine, and a source checkout sees
the same files under its top-level ``configs/``. Each file opens with the command that runs it.

Configuration checks that need no model: :func:`check_strategy` (a strategy name Lightning does
not know, naming the presets) and :func:`check_batch_budget` (the tokens one training step holds).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "PRESETS_DIR",
    "DEFAULT_MAX_BATCH_TOKENS",
    "preset_files",
    "trainer_presets",
    "copy_presets",
    "check_strategy",
    "check_batch_budget",
    "main",
]

#: where the YAML presets are installed
PRESETS_DIR = Path(__file__).resolve().parent

#: default token budget of one training step (forget + retain windows held at once)
DEFAULT_MAX_BATCH_TOKENS = 262_144


def preset_files() -> dict[str, Path]:
    """Every preset as ``{"trainer/cpu": path, "methods/npo": path, ...}``, sorted by name."""
    files = sorted(PRESETS_DIR.glob("*/*.yaml"))
    return {f"{p.parent.name}/{p.stem}": p for p in files}


def trainer_presets() -> list[str]:
    """Names of the trainer presets (``configs/trainer/<name>.yaml``)."""
    return sorted(p.stem for p in (PRESETS_DIR / "trainer").glob("*.yaml"))


def copy_presets(destination: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Write every preset under ``destination`` (``trainer/``, ``methods/``...); returns the paths.

    Refuses to replace an existing file unless ``overwrite``; then nothing is written at all.
    """
    out = Path(destination)
    targets = {name: out / f"{name}.yaml" for name in preset_files()}
    clashes = [str(t) for t in targets.values() if t.exists()]
    if clashes and not overwrite:
        raise FileExistsError(
            f"--copy '{out}' already holds {len(clashes)} preset file(s) (e.g. '{clashes[0]}'); "
            "pass --overwrite to replace them or choose another folder"
        )
    written = []
    for name, source in preset_files().items():
        targets[name].parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, targets[name])
        written.append(targets[name])
    return written


def _first_comment(path: Path) -> str:
    """The file's description: its comment lines after the opening command, joined."""
    lines = path.read_text(encoding="utf-8").splitlines()
    text = [ln.lstrip("# ").strip() for ln in lines[1:4] if ln.startswith("#")]
    return " ".join(t for t in text if t)[:100]


def check_strategy(strategy: Any) -> None:
    """Refuse a strategy name Lightning does not know, naming the installed presets."""
    if not isinstance(strategy, str) or strategy == "auto":
        return
    from lightning.pytorch.strategies import StrategyRegistry

    known = StrategyRegistry.available_strategies()
    if strategy in known:
        return
    presets = trainer_presets()
    hint = ""
    if strategy in presets:
        hint = (
            f" '{strategy}' is a preset: pass --config {PRESETS_DIR / 'trainer' / strategy}.yaml."
        )
    raise ValueError(
        f"unknown strategy '{strategy}' (trainer.strategy).{hint} Trainer presets (`lightning-unlearn "
        f"configs` lists them; --config {PRESETS_DIR / 'trainer'}/<name>.yaml): "
        f"{', '.join(presets)}. Strategy names Lightning knows: {', '.join(sorted(known))}"
    )


def check_batch_budget(
    *,
    batch_size: int,
    max_length: int,
    retain_per_forget: int = 1,
    with_retain: bool = True,
    max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS,
    retain_batch_size: int | None = None,
) -> int:
    """Refuse a training step that would hold more than ``max_batch_tokens`` tokens.

    One step holds the forget batch and (methods with a retain term) the retain batch:
    ``(batch_size + retain) * max_length`` tokens, where ``retain`` is ``retain_batch_size`` or
    ``batch_size * retain_per_forget``. Returns that number. ``max_batch_tokens=None`` disables
    the check.
    """
    retain = batch_size * retain_per_forget if retain_batch_size is None else retain_batch_size
    windows = batch_size + (retain if with_retain else 0)
    tokens = windows * max_length
    if max_batch_tokens is not None and tokens > max_batch_tokens:
        shape = f"batch_size {batch_size} x max_length {max_length}"
        if with_retain and retain:
            shape = f"(batch_size {batch_size} + {retain} retain) x max_length {max_length}"
        raise ValueError(
            f"one training step would hold {shape} = {tokens:,} tokens, above the allowed "
            f"max_batch_tokens={max_batch_tokens:,}. Lower data.batch_size (and set "
            "trainer.accumulate_grad_batches to keep the effective batch) or max_length, or "
            "raise --max_batch_tokens if your hardware holds it"
        )
    return tokens


def main(argv: Sequence[str] | None = None) -> int:
    """``lightning-unlearn configs``: list the installed presets, or copy them out."""
    parser = argparse.ArgumentParser(
        prog="lightning-unlearn configs",
        description="List the configuration presets installed with lightning-unlearn, or copy "
        "them into a folder to edit.",
    )
    parser.add_argument("--copy", metavar="DIR", default=None, help="write every preset here")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)
    if args.copy is not None:
        written = copy_presets(args.copy, overwrite=args.overwrite)
        print(f"wrote {len(written)} presets under {Path(args.copy).resolve()}")
        return 0
    print(f"presets installed in {PRESETS_DIR} (use --config <path>, or --copy DIR):")
    width = max(len(name) for name in preset_files())
    for name, path in preset_files().items():
        print(f"  {name.ljust(width)}  {_first_comment(path)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
