"""Downstream utility of an (unlearned) model through lm-eval, the EleutherAI evaluation harness.

The exported Hugging Face checkpoint is loaded by lm-eval's ``hf`` model, so any of its tasks
(``mmlu``, ``hellaswag``, ``arc_easy``...: they need the network to fetch their data) or a task
YAML of your own (``include_path``) can be run. Offline, point ``include_path`` at a folder of
task YAMLs that read local files (``tests/fixtures/lm_eval/tiny_mc.yaml`` is one).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..io import atomic_write_json

log = logging.getLogger(__name__)

__all__ = ["evaluate_downstream", "evaluate_options", "main_evaluate", "build_parser"]


def _task_manager(include_path: str | os.PathLike | None, tasks: Sequence[str]):
    from lm_eval.tasks import TaskManager

    if include_path is None:
        return TaskManager()
    folder = Path(include_path)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"lm-eval include_path '{folder}' is not a folder of task YAML files"
        )
    # indexing lm-eval's thousands of built-in tasks is slow: skip it when the folder has them all
    local = TaskManager(include_path=str(folder), include_defaults=False)
    if all(task in local.all_tasks for task in tasks):
        return local
    return TaskManager(include_path=str(folder))


def _clean_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evaluate_downstream(
    model_path: str | os.PathLike,
    tasks: Sequence[str],
    *,
    include_path: str | os.PathLike | None = None,
    limit: int | float | None = None,
    batch_size: int | str = 1,
    device: str = "cpu",
    num_fewshot: int | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Run lm-eval tasks on a Hugging Face checkpoint.

    Args:
        model_path: a folder with a Hugging Face checkpoint (e.g. ``UnlearningModule.export``) or a
            hub id.
        tasks: lm-eval task or group names, e.g. ``["mmlu", "arc_easy"]``.
        include_path: a folder of extra task YAMLs.
        limit: documents per task (an int) or a fraction of them (a float < 1); ``None``: all.
        batch_size: lm-eval batch size (``"auto"`` allowed).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        num_fewshot: few-shot examples per prompt; ``None`` keeps each task's default.
        dtype: weight dtype passed to transformers (``"float32"``, ``"bfloat16"``); ``None``: auto.
        trust_remote_code: allow model code from the hub to run.

    Returns:
        ``{"results": {task: {metric: value}}, "versions": ..., "n-shot": ..., "config": ...}``:
        metric names as lm-eval writes them (``"acc,none"``, ``"acc_stderr,none"``...).
    """
    tasks = [t.strip() for t in tasks if t and t.strip()]
    if not tasks:
        raise ValueError("no lm-eval task given; pass task names such as ['mmlu'] or ['arc_easy']")
    if include_path is not None and not Path(include_path).is_dir():
        raise FileNotFoundError(
            f"lm-eval include_path '{include_path}' is not a folder of task YAML files"
        )
    try:
        import lm_eval
    except ImportError as err:  # pragma: no cover - lm-eval is a declared dependency
        raise ImportError("downstream evaluation needs lm-eval: pip install lm-eval") from err
    if os.path.exists(os.path.expanduser(str(model_path))):
        model_path = str(Path(os.path.expanduser(str(model_path))).resolve())
    manager = _task_manager(include_path, tasks)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        hint = f" or in include_path '{include_path}'" if include_path else ""
        raise ValueError(
            f"unknown lm-eval task(s) {unknown}: not among lm-eval's tasks{hint}; list them with "
            "`lm-eval ls tasks` or pass include_path with your task YAML"
        )
    model_args = f"pretrained={model_path}"
    if dtype:
        model_args += f",dtype={dtype}"
    if trust_remote_code:
        model_args += ",trust_remote_code=True"
    results = lm_eval.simple_evaluate(
        model="hf",
        model_args=model_args,
        tasks=tasks,
        num_fewshot=num_fewshot,
        batch_size=batch_size,
        device=device,
        limit=limit,
        task_manager=manager,
        log_samples=False,
    )
    if results is None:  # non-zero ranks under lm-eval's own multi-process runs
        return {}
    return {
        "results": {
            task: {k: _clean_number(v) for k, v in metrics.items() if k not in ("alias", "name")}
            for task, metrics in results["results"].items()
        },
        "versions": dict(results.get("versions", {})),
        "n-shot": dict(results.get("n-shot", {})),
        "config": {
            "model": str(model_path),
            "tasks": tasks,
            "limit": limit,
            "num_fewshot": num_fewshot,
            "lm_eval_version": results.get("lm_eval_version"),
        },
    }


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``lightning-unlearn evaluate``."""
    parser = argparse.ArgumentParser(
        prog="lightning-unlearn evaluate",
        description="Downstream utility of a Hugging Face checkpoint through lm-eval tasks.",
    )
    parser.add_argument("--model", required=True, help="checkpoint folder (or hub id) to evaluate")
    parser.add_argument(
        "--tasks", required=True, help="comma-separated lm-eval tasks, e.g. mmlu,arc_easy"
    )
    parser.add_argument("--include_path", default=None, help="folder with extra task YAML files")
    parser.add_argument(
        "--limit", type=float, default=None, help="documents per task (int) or fraction (<1)"
    )
    parser.add_argument("--batch_size", default="1", help="lm-eval batch size or 'auto'")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--num_fewshot", type=int, default=None, help="few-shot examples per prompt"
    )
    parser.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: auto)")
    parser.add_argument("--output", default=None, help="write the results as JSON to this file")
    return parser


def evaluate_options(options: Any) -> dict[str, Any]:
    """:func:`evaluate_downstream` on parsed command-line options (``model``, ``tasks`` comma
    separated, ``include_path``, ``limit``, ``batch_size`` as text, ``device``, ``num_fewshot``,
    ``dtype``): this module's parser's or ``lightning-unlearn evaluate``'s."""
    limit = options.limit
    if limit is not None and limit >= 1:
        limit = int(limit)
    batch = options.batch_size
    return evaluate_downstream(
        options.model,
        options.tasks.split(","),
        include_path=options.include_path,
        limit=limit,
        batch_size=int(batch) if batch.isdigit() else batch,
        device=options.device,
        num_fewshot=options.num_fewshot,
        dtype=options.dtype,
    )


def main_evaluate(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Entry point of ``lightning-unlearn evaluate``: run lm-eval tasks, print and save results."""
    args = build_parser().parse_args(argv)
    results = evaluate_options(args)
    text = json.dumps(results, indent=2, default=str)
    if args.output:
        atomic_write_json(args.output, json.loads(text))
        log.info("wrote %s", args.output)
    sys.stdout.write(text + "\n")
    return results


if __name__ == "__main__":  # pragma: no cover
    main_evaluate()
