"""Helpers shared by the benchmark scripts (not part of the library).

* :func:`machine` / :func:`provenance`: date, machine, commit and library versions for every
  recorded figure;
* :func:`matmul_peak`: the fp32 matmul FLOP/s of this machine, measured in the same run (the MFU
  denominator);
* :class:`DemoTask`: the demo's task (corpus, continued-pre-training ``seen`` model, exact-retrain
  model, data modules with in-distribution or general retain data), built with the demo's own code
  and cache so the benchmarks and ``lightning-unlearn demo`` share their expensive checkpoints;
* :func:`smoke_settings`: a demo task small enough for a tiny model in seconds (tests).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from lightning_unlearn.evaluation.base import finite  # noqa: F401 - the benchmarks' finite()

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------------- provenance
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cpu": _cpu_name(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": _memory_gib(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        # other processes on the machine skew timings: the 1/5/15-minute load when recorded
        "load_average": [round(x, 2) for x in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
    }


def host_id() -> str:
    """Which machine (and boot) a timing came from: timings of different machines do not mix.

    The kernel's boot id (a fresh one per machine start; a benchmark resumed in a later session
    usually runs on another machine), else the host name."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        return platform.node() or "unknown"


#: what benchmarks write (not code): left out of the working tree's ``+dirty``
OUTPUTS = (":(exclude)benchmarks/results", ":(exclude)docs")


def commit() -> str:
    """The git commit of the working tree (``+dirty`` when tracked files other than the
    benchmarks' own outputs, ``benchmarks/results/`` and ``docs/``, differ: a benchmark running
    beside another changes those, not the code)."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *OUTPUTS],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def provenance() -> dict[str, Any]:
    """Date (UTC), commit, machine and versions: stored with every benchmark result."""
    import lightning
    import transformers

    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit(),
        "machine": machine(),
        "lightning": lightning.__version__,
        "transformers": transformers.__version__,
    }


def provenance_line(p: dict[str, Any]) -> str:
    m = p["machine"]
    return (
        f"Measured {p['date']} at commit `{p['commit']}` on {m['cpu']} "
        f"({m['logical_cpus']} logical CPUs, {m['torch_threads']} torch threads, "
        f"{m['memory_gib']} GiB RAM{', GPU ' + m['gpu'] if m.get('gpu') else ', no GPU'}; "
        f"load average {m.get('load_average')} when written); "
        f"torch {m['torch']}, lightning {p['lightning']}, transformers {p['transformers']}."
    )


def set_threads(threads: int | None) -> int:
    """Limit torch to ``threads`` (default: all cores) and return the number used."""
    n = threads or os.cpu_count() or 1
    torch.set_num_threads(n)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return n


# ----------------------------------------------------------------------------------- hardware
def matmul_peak(size: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Best FLOP/s of a square ``size`` matmul over ``repeats`` timed runs (after one warm-up)."""
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2.0 * size**3 / best


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def param_count(model: torch.nn.Module) -> int:
    """Parameters counted once even when tied (the LM head shares the embedding)."""
    return sum({p.data_ptr(): p.numel() for p in model.parameters()}.values())


def flops_per_token(n_params: int, config: Any, seq_len: int, *, backward: bool = True) -> float:
    """Model FLOPs per token (PaLM, Chowdhery et al. 2022, appendix B):
    ``6 N + 12 L d T`` with a backward pass, ``2 N + 4 L d T`` forward only
    (N parameters, L layers, d hidden size, T sequence length)."""
    layers, width = config.num_hidden_layers, config.hidden_size
    if backward:
        return 6.0 * n_params + 12.0 * layers * width * seq_len
    return 2.0 * n_params + 4.0 * layers * width * seq_len


# ----------------------------------------------------------------------------------- the demo task
def smoke_settings(cache_dir: str | os.PathLike):
    """Demo settings small enough for the tiny test model (seconds)."""
    from lightning_unlearn.demo import DemoSettings

    documents = {
        f"{split}_documents": 4 for split in ("forget", "approximate", "retain", "general")
    }
    return DemoSettings(
        output_dir=str(Path(cache_dir) / "out"),
        cache_dir=str(cache_dir),
        max_length=64,
        pretrain_epochs=1,
        pretrain_batch_size=4,
        unlearn_batch_size=2,
        **documents,
    )


def forget_batch(settings, batch_size: int | str | None) -> int:
    """The forget batch of a benchmark row: ``None`` the demo's unlearning batch, ``"all"`` every
    forget document (one window each in the demo corpus: its documents are shorter than a
    window), else the number given."""
    if batch_size == "all":
        return settings.forget_documents
    return batch_size or settings.unlearn_batch_size


@dataclasses.dataclass
class DemoTask:
    """The demo's task: the corpus, the seen model, the exact-retrain model and their data.

    Built with the demo's own functions and cache keys (``lightning_unlearn.demo``), so a model the
    demo already trained is reused, never trained twice.
    """

    settings: Any
    base_dir: Path
    corpus: Path
    seen_dir: Path
    exact_dir: Path

    @classmethod
    def build(cls, settings, *, base_model: str | os.PathLike | None = None) -> DemoTask:
        from lightning_unlearn.demo import continue_pretraining, demo_corpus
        from lightning_unlearn.models import convert_gguf_to_checkpoint, smollm2_gguf_path

        s = settings
        cache = Path(s.cache_dir)
        if base_model is None:
            base = convert_gguf_to_checkpoint(smollm2_gguf_path(), cache / "smollm2-135m-instruct")
        else:
            base = Path(base_model)
        corpus = demo_corpus(base, s)
        # the demo's own output folders: its settings stamp decides whether they are reused
        seen = continue_pretraining(base, corpus, s, train="pretrain", out=cache / "demo-continued")
        exact = continue_pretraining(
            base, corpus, s, train="pretrain_without_forget", out=cache / "demo-exact-retrain"
        )
        return cls(settings=s, base_dir=Path(base), corpus=corpus, seen_dir=seen, exact_dir=exact)

    def data(
        self,
        *,
        retain: str = "retain",
        batch_size: int | str | None = None,
        eval_batch_size: int = 8,
        packing: bool = False,
        model_dir: Path | None = None,
        **options: Any,
    ):
        """The data module the demo uses; ``retain="general"`` trains the retain term on the
        general split (the paper's "general" retain data) while still *evaluating* the retain split.
        ``options`` are more data-module options (``eval_subset``...). ``batch_size="all"``:
        every forget document in each batch (one window each in the demo corpus).
        """
        from lightning_unlearn.data import UnlearningDataModule

        s, c = self.settings, self.corpus
        return UnlearningDataModule(
            str(model_dir or self.seen_dir),
            forget=str(c / "forget.jsonl"),
            retain=str(c / f"{retain}.jsonl") if retain else None,
            eval_forget=str(c / "forget.jsonl"),
            eval_retain=str(c / "retain.jsonl"),
            approximate=str(c / "approximate.jsonl"),
            general=str(c / "general.jsonl"),
            max_length=s.max_length,
            packing=packing,
            batch_size=forget_batch(s, batch_size),
            eval_batch_size=eval_batch_size,
            cache_dir=str(Path(s.cache_dir) / "data"),
            seed=s.seed,
            **options,
        )


def eval_loaders(data) -> dict[str, Any]:
    """``{split: DataLoader}`` of a data module's evaluation splits."""
    data.setup("validate")
    return dict(data.val_dataloader().iterables)


def count_tokens(batch: dict[str, Any]) -> tuple[int, int]:
    """(real tokens, positions) of a batch or of a ``{"forget": b, "retain": b}`` pair."""
    parts = [batch[k] for k in ("forget", "retain") if k in batch] if "forget" in batch else [batch]
    real = sum(int(p["attention_mask"].sum()) for p in parts)
    positions = sum(int(p["input_ids"].numel()) for p in parts)
    return real, positions


# ----------------------------------------------------------------------------------- budgets
class Budget:
    """The wall-clock budget of one invocation of a long benchmark (``--budget-minutes M``).

    A benchmark runs in units (a model, a method x attack cell), writes each unit's result as it
    finishes, and asks :meth:`spent` after each: once ``M`` minutes have passed it stops cleanly,
    and ``--resume`` continues with the units left. ``None``: no budget. ``clock`` is injectable
    (tests)."""

    def __init__(self, minutes: float | None, *, clock: Callable[[], float] = time.monotonic):
        if minutes is not None and not minutes >= 0:
            raise SystemExit(f"--budget-minutes must be >= 0, got {minutes!r}")
        self.minutes, self.clock = minutes, clock
        self.started = clock()
        self.stopped = False  # set by units() when the budget ends a run

    def spent(self) -> bool:
        """Whether the budget is used up (never without one)."""
        return self.minutes is not None and self.clock() - self.started >= 60.0 * self.minutes

    def stop_line(self, done: int, left: int, script: str) -> str:
        return (
            f"budget of {self.minutes:g} min spent after {done} unit(s) of this run; {left} "
            f"left: python benchmarks/{script} --resume continues"
        )

    def units(self, todo: Sequence[Any], script: str) -> Iterator[Any]:
        """The units of ``todo`` in order, until the budget is spent after one (each finished
        unit is already in the results); then the stop line is printed and :attr:`stopped` set."""
        self.stopped = False
        for done, unit in enumerate(todo):
            if done and self.spent():
                print(self.stop_line(done, len(todo) - done, script), flush=True)
                self.stopped = True
                return
            yield unit


def add_budget_argument(parser) -> None:
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=None,
        help="stop cleanly after the unit in progress once this many minutes have passed (each "
        "finished unit is already in --json); --resume continues",
    )


def previous_results(path: Path, resume: bool, **same: Any) -> dict[str, Any] | None:
    """With ``--resume``, the results stored in ``path`` (``None`` without one or without the
    file), checked to have been made with the same ``same`` (each a key of the stored results:
    the settings that make stored scores reusable)."""
    if not (resume and path.exists()):
        return None
    previous = json.loads(path.read_text())
    for key, value in same.items():
        if previous.get(key) != json.loads(json.dumps(value, default=str)):
            raise SystemExit(
                f"--resume: {path} was made with other {key} ({previous.get(key)}); run "
                "without --resume (or with another --json) to start again"
            )
    return previous


# ----------------------------------------------------------------------------------- output
def write_json(path: str | os.PathLike, payload: Any) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(_clean(payload), indent=2, default=_jsonable, allow_nan=False) + "\n")
    os.replace(tmp, out)
    return out


def _clean(value: Any) -> Any:
    """Replace NaN / infinity (not valid JSON) by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def replace_section(path: str | os.PathLike, marker: str, body: str, *, title: str) -> Path:
    """Write ``body`` between ``<!-- marker:start -->`` and ``<!-- marker:end -->`` in ``path``
    (appended under ``title`` when absent), leaving the rest of the document as it is."""
    out = Path(path)
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    text = out.read_text() if out.exists() else f"# {title}\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out


def fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any] | str]) -> list[str]:
    """The lines of a markdown table: the header, its rule and one line per row (cells joined by
    `` | ``; a row given as a string is a line as it is)."""

    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(c) for c in cells) + " |"

    return [line(header), "|" + "---|" * len(header)] + [
        row if isinstance(row, str) else line(row) for row in rows
    ]


def save_figure(fig, folder: Path, name: str) -> str:
    """Lay ``fig`` out, save it as ``folder/name`` and return the name (the page links it)."""
    fig.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(folder / name)
    return name
