"""The audit record of an unlearning run: a model card (``README.md``, Hugging Face's format)
written into the exported model folder.

It names the base model, the method and its hyper-parameters, the SHA-256 of every forget document
(so an auditor can check which documents were to be forgotten without the card holding their
text), the library's version and commit, and the report's figures and verdict.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["document_hashes", "library_commit", "model_card", "write_model_card"]


def document_hashes(texts: Sequence[str]) -> list[str]:
    """SHA-256 (hex) of each document's UTF-8 text, in order."""
    return [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]


def library_commit() -> str:
    """The git commit of the library's source checkout, or ``"unknown"`` (an installed wheel)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return "unknown"
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def _yaml_string(value: str) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def model_card(
    report: Mapping[str, Any],
    *,
    base_model: str,
    forget_hashes: Sequence[str],
    hyper_parameters: Mapping[str, Any],
    table: str,
) -> str:
    """The model card's text: YAML front matter, then the record in prose and tables."""
    from .version import __version__

    lines = [
        "---",
        f"base_model: {_yaml_string(base_model)}",
        "library_name: transformers",
        "tags:",
        "  - machine-unlearning",
        "  - lightning-unlearn",
        "---",
        "",
        f"# Unlearned model: {report['method']} on {Path(base_model).name or base_model}",
        "",
        f"This model is `{base_model}` after machine unlearning with `{report['method']}` "
        f"({report['steps']} optimizer steps) by lightning-unlearn {__version__} "
        f"(commit `{library_commit()}`). The forget set held {len(forget_hashes)} documents, "
        "listed below by SHA-256 of their UTF-8 text.",
        "",
        "## Result",
        "",
        f"Approximate-retrain target perplexity: {report['target_ppl']:.3f}; stopped at step "
        f"{report.get('stopped_step')}.",
        "",
        table,
        "",
    ]
    lines += [f"- {v}" for v in report.get("verdict", [])]
    lines += ["", "## Hyper-parameters", "", "| name | value |", "|---|---|"]
    lines += [f"| {k} | `{v}` |" for k, v in sorted(hyper_parameters.items())]
    lines += ["", "## Forget documents (SHA-256)", ""]
    lines += [f"{i}. `{h}`" for i, h in enumerate(forget_hashes)]
    return "\n".join(lines) + "\n"


def write_model_card(folder: str | Path, text: str) -> Path:
    """Write ``README.md`` into the exported model folder."""
    from .io import atomic_write_text

    return atomic_write_text(Path(folder) / "README.md", text)
