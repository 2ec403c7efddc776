"""Training throughput, peak memory and MFU of GA, GA+GD and GA+KL, three implementations side by side.

* ``lightning_unlearn``: the library (``UnlearningDataModule(packing=True)`` + ``Trainer.fit``);
* ``hf_trainer_padded``: a Hugging Face ``Trainer`` with a custom ``compute_loss`` of the same
  objective, every document chunked and each chunk padded to ``max_length``, as the reference
  repositories do;
* ``torch_loop``: a minimal hand-written PyTorch loop on the library's packed batches.

Each row runs in a fresh subprocess (so peak RSS, from ``resource.getrusage``, is that row's own),
times ``--steps`` optimizer steps after ``--warmup`` untimed ones, and reports

* ``tokens_per_s``: real (non-padding) tokens per second, forget + retain. For the padded Trainer
  every step has the same shape, so its real tokens/s over an epoch is its padded tokens/s times
  ``1 - padding_waste`` of the corpus; that is what is reported (``positions_per_s`` is the padded
  rate);
* ``mfu``: model FLOPs per second over the fp32 matmul peak measured at the start of the same run.
  Model FLOPs per position (PaLM appendix B): ``6 N + 12 L d T`` for each trained sequence (forget;
  retain for GA+GD / GA+KL), ``2 N + 4 L d T`` for the reference forward of GA+KL, counted over the
  positions processed (padding included: MFU measures the hardware's use, not the useful work);
* ``padding_waste``: the fraction of positions that are padding when the corpus is chunked per
  document and padded to ``max_length`` (packing leaves none).

The corpus is whole standard-library modules (forget) and other modules (retain), so documents are
long, like the reference paper's 4096-token chunks of arXiv / GitHub files.

Run (about 8 minutes on 2 CPU cores with the defaults)::

    python benchmarks/throughput.py       # benchmarks/results/throughput.json + docs/performance.md
    python benchmarks/throughput.py --smoke --model <tiny model dir> --json /tmp/t.json   # seconds
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from throughput_page import checks, order_checks, render, render_orders  # noqa: E402
from throughput_rows import IMPLS, METHODS, parameter_count, run_row, texts  # noqa: E402


# ----------------------------------------------------------------------------------- corpus
def build_corpus(out: Path, *, documents: int, seed: int = 0) -> Path:
    """``forget.jsonl`` / ``retain.jsonl``: whole standard-library modules, disjoint, deterministic."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if not p.name.startswith(("test_", "_")))
    random.Random(seed).shuffle(files)
    out.mkdir(parents=True, exist_ok=True)
    picked = iter(files)
    for split in ("forget", "retain"):
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            n = 0
            for path in picked:
                try:
                    text = path.read_text(encoding="utf-8")
                except (UnicodeDecodeError, OSError):
                    continue
                if len(text) < 2000:
                    continue
                fh.write(json.dumps({"text": text, "source": path.name}) + "\n")
                n += 1
                if n == documents:
                    break
    return out


def padding_waste(tokenizer, texts: list[str], max_length: int) -> float:
    """Fraction of padded positions when each document is chunked and padded to ``max_length``."""
    from lightning_unlearn.data.tokenize import chunk_documents

    cols, _ = chunk_documents(tokenizer, texts, max_length=max_length)
    real = sum(len(x) for x in cols["input_ids"])
    return 1.0 - real / (len(cols["input_ids"]) * max_length)


# ----------------------------------------------------------------------------------- one row
# ----------------------------------------------------------------------------------- backward orders
#: (method, LoRA): the two pairs whose memory ratio the backward order should bring down
ORDER_ROWS = (("GA", False), ("GA+GD", False), ("GA", True), ("GA+KL", True))


def backward_orders(args, peak: float, params: int, started: float, tmp) -> int:
    """Joint and sequential backward of the library, interleaved (the order alternates from one
    method to the next, so drift in the machine's speed does not favour one); per row the median
    step time of at least 10 timed steps, tokens/s from it, and the row's own peak RSS."""
    work = Path(args.workdir)
    length, steps = args.lengths[0], max(10, args.steps)
    rows = []
    for i, (method, lora) in enumerate(ORDER_ROWS):
        orders = ("joint", "sequential") if i % 2 == 0 else ("sequential", "joint")
        for order in orders:
            out = work / f"order-{method}-{int(lora)}-{order}.json"
            argv = _row_argv(
                args,
                "lightning_unlearn",
                method,
                length,
                args.batch_size,
                steps,
                args.warmup,
                lora,
                params,
                out,
                backward=order,
            )
            row = finish_row(_isolated(args.isolation, argv, out), waste=0.0, peak=peak)
            median = statistics.median(row["step_seconds"])
            row["median_step_seconds"] = median
            row["median_tokens_per_s"] = statistics.median(row["step_tokens"]) / median
            rows.append(row)
            print(
                f"{row['method']:14s} {order:10s} {length}: median {median:.2f} s/step, "
                f"{row['median_tokens_per_s']:.1f} tok/s, RSS {row['peak_rss_mb']:.0f} MiB "
                f"(total {time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    result = {
        "provenance": common.provenance(),
        "model": args.model,
        "max_length": length,
        "batch_size": args.batch_size,
        "timed_steps": steps,
        "warmup": args.warmup,
        "rows": rows,
        "checks": order_checks(rows),
        "total_seconds": time.perf_counter() - started,
        "notes": args.notes,
    }
    path = Path(args.json).with_name("backward_orders.json")
    common.write_json(path, result)
    common.replace_section(
        args.markdown, "backward_orders", render_orders(result), title="Performance"
    )
    print(f"wrote {path} and {args.markdown}", flush=True)
    if tmp is not None:
        tmp.cleanup()
    return 0


# ----------------------------------------------------------------------------------- driver
def finish_row(row: dict[str, Any], *, waste: float, peak: float) -> dict[str, Any]:
    positions_per_s = row["positions"] / row["seconds"]
    if row["impl"] == "hf_trainer_padded":
        row["padding_waste"] = waste
        row["tokens_per_s"] = positions_per_s * (1.0 - waste)
        row["tokens_per_s_timed_batches"] = row["real_tokens"] / row["seconds"]
    else:
        row["padding_waste"] = 1.0 - row["real_tokens"] / row["positions"]
        row["tokens_per_s"] = row["real_tokens"] / row["seconds"]
    row["positions_per_s"] = positions_per_s
    row["model_flops_per_s"] = row["model_flops"] / row["seconds"]
    row["mfu"] = row["model_flops_per_s"] / peak
    return row


def _row_argv(
    args, impl, method, max_length, batch, steps, warmup, lora, params, out, backward=None
) -> list[str]:
    argv = [
        "--worker",
        "--impl",
        impl,
        "--method",
        method,
        "--max-length",
        str(max_length),
        "--batch-size",
        str(batch),
        "--steps",
        str(steps),
        "--warmup",
        str(warmup),
        "--model",
        args.model,
        "--corpus",
        str(args.corpus),
        "--workdir",
        str(args.workdir),
        "--row-json",
        str(out),
        "--params",
        str(params),
    ]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    argv.append("--lora" if lora else "--no-lora")
    if backward is not None:
        argv += ["--backward", backward]
    return argv


def _forked(target, *a):
    """Run ``target(*a)`` in a forked child (imports are inherited, memory is its own) and return
    its result. The parent must not have run torch kernels before (OpenMP is not fork-safe)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)

    def body():
        try:
            child.send(("ok", target(*a)))
        except BaseException as err:  # noqa: BLE001 - reported to the parent
            import traceback

            child.send(("error", f"{err!r}\n{traceback.format_exc()}"))

    proc = ctx.Process(target=body)
    proc.start()
    status, value = parent.recv()
    proc.join()
    if status != "ok":
        raise RuntimeError(f"benchmark child failed: {value}")
    return value


def _isolated(isolation: str, argv: list[str], out: Path) -> dict[str, Any]:
    """One row: in this process, a forked child (default) or a fresh interpreter."""
    if isolation == "inline":
        return run_row(build_parser().parse_args(argv))
    if isolation == "fork":
        return _forked(run_row, build_parser().parse_args(argv))
    subprocess.run([sys.executable, __file__, *argv], check=True)
    return json.loads(out.read_text())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="model folder (default: converted SmolLM2-135M)")
    p.add_argument("--smoke", action="store_true", help="tiny settings, rows in-process (a test)")
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--lengths", nargs="+", type=int, default=[512, 2048])
    p.add_argument(
        "--long-methods",
        nargs="+",
        choices=list(METHODS),
        help="methods to run at lengths above 512 (default: all)",
    )
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--steps", type=int, default=2, help="timed steps at 512")
    p.add_argument("--steps-long", type=int, default=1, help="timed steps above 512")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument(
        "--lora",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time GA and GA+KL with LoRA (lightning_unlearn, shortest length)",
    )
    p.add_argument("--documents", type=int, default=24, help="modules per split")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--isolation",
        choices=("fork", "subprocess", "inline"),
        default="fork",
        help="each row in a forked child of this process (default: its own memory, no "
        "second import of torch/lightning), a fresh interpreter, or in this process",
    )
    p.add_argument(
        "--json", default=str(common.ROOT / "benchmarks" / "results" / "throughput.json")
    )
    p.add_argument("--markdown", default=str(common.ROOT / "docs" / "performance.md"))
    p.add_argument("--notes", default="", help="text appended under the tables")
    p.add_argument(
        "--backward-orders",
        action="store_true",
        help="instead of the implementations: the library's joint and sequential backward "
        "orders, interleaved, GA / GA+GD / GA (LoRA) / GA+KL (LoRA) at the first length, the "
        "median of --steps timed steps (at least 10)",
    )
    p.add_argument("--workdir", default=None)
    p.add_argument(
        "--render-only",
        action="store_true",
        help="re-render the markdown section from --json (with --notes if given)",
    )
    # worker-only options
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--impl", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--max-length", type=int, help=argparse.SUPPRESS)
    p.add_argument("--corpus", help=argparse.SUPPRESS)
    p.add_argument("--row-json", help=argparse.SUPPRESS)
    p.add_argument("--params", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--backward", default=None, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.render_only:  # rebuild the markdown section from the JSON (e.g. with new --notes)
        result = json.loads(Path(args.json).read_text())
        if args.notes:
            result["notes"] = args.notes
            common.write_json(args.json, result)
        common.replace_section(args.markdown, "throughput", render(result), title="Performance")
        return 0
    if args.worker:
        row = run_row(args)
        Path(args.row_json).write_text(json.dumps(row))
        return 0
    from lightning_unlearn.demo import quiet
    from lightning_unlearn.models import (
        convert_gguf_to_checkpoint,
        load_tokenizer,
        smollm2_gguf_path,
    )

    quiet()
    threads = common.set_threads(args.threads)
    if args.smoke:
        if not args.model:
            raise SystemExit("--smoke needs --model <tiny model folder>")
        args.isolation, args.lengths, args.documents = "inline", [64], 2
        args.methods, args.steps, args.steps_long, args.lora = ["GA", "GA+KL"], 1, 1, False
    if args.model is None:
        args.model = str(
            convert_gguf_to_checkpoint(
                smollm2_gguf_path(),
                common.ROOT / ".cache" / "lightning_unlearn" / "smollm2-135m-instruct",
            )
        )
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="lu-throughput-")
        args.workdir = tmp.name
    work = Path(args.workdir)
    args.corpus = build_corpus(work / "corpus", documents=args.documents)
    started = time.perf_counter()
    size, repeats = (512, 3) if args.smoke else (2048, 5)
    # no torch kernels in this process before the rows: forked children would inherit OpenMP state
    peak = (
        common.matmul_peak(size, repeats)
        if args.isolation == "inline"
        else _forked(common.matmul_peak, size, repeats)
    )
    print(f"matmul peak {peak / 1e9:.1f} GFLOP/s", flush=True)
    tokenizer = load_tokenizer(args.model)
    corpus_texts = texts(args.corpus / "forget.jsonl") + texts(args.corpus / "retain.jsonl")
    from transformers import AutoConfig  # noqa: F401  (import cost outside the timed rows)

    params = parameter_count(args.model)
    # padding waste of per-document chunking at several lengths (tokenizer only: cheap)
    waste_by_length = {
        str(n): padding_waste(tokenizer, corpus_texts, n)
        for n in sorted({512, 1024, 2048, 4096, *args.lengths})
    }
    if args.backward_orders:
        return backward_orders(args, peak, params, started, tmp)
    rows = []
    for length in args.lengths:
        waste = padding_waste(tokenizer, corpus_texts, length)
        long = length > min(args.lengths)
        methods = (args.long_methods or args.methods) if long else args.methods
        plan = [(impl, m, False) for m in methods for impl in args.impls]
        if args.lora and not long and "lightning_unlearn" in args.impls:
            plan += [("lightning_unlearn", m, True) for m in ("GA", "GA+KL")]
        for impl, method, lora in plan:
            steps = args.steps_long if long else args.steps
            out = work / f"row-{impl}-{method}-{length}-{int(lora)}.json"
            argv = _row_argv(
                args, impl, method, length, args.batch_size, steps, args.warmup, lora, params, out
            )
            t = time.perf_counter()
            row = _isolated(args.isolation, argv, out)
            row = finish_row(row, waste=waste, peak=peak)
            rows.append(row)
            print(
                f"{impl:18s} {row['method']:14s} {length:5d}: {row['tokens_per_s']:7.1f} tok/s, "
                f"MFU {100 * row['mfu']:.1f}%, RSS {row['peak_rss_mb']:.0f} MiB "
                f"({time.perf_counter() - t:.0f} s; total {time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    peak_end = (
        common.matmul_peak(size, repeats)
        if args.isolation == "inline"
        else _forked(common.matmul_peak, size, repeats)
    )
    result = {
        "provenance": common.provenance(),
        "model": args.model,
        "params": params,
        "matmul_peak_gflops": max(peak, peak_end) / 1e9,
        "matmul_peak_gflops_start_end": [peak / 1e9, peak_end / 1e9],
        "matmul_size": size,
        "matmul_repeats": repeats,
        "threads": threads,
        "batch_size": args.batch_size,
        "warmup": args.warmup,
        "steps": args.steps,
        "steps_long": args.steps_long,
        "documents": args.documents,
        "total_seconds": time.perf_counter() - started,
        "rows": rows,
        "notes": args.notes,
        "padding_waste_by_length": waste_by_length,
    }
    # MFU against the better of the two peak measurements (start and end of the run)
    for row in rows:
        row["mfu"] = row["model_flops_per_s"] / (result["matmul_peak_gflops"] * 1e9)
    result["checks"] = checks(rows)
    common.write_json(args.json, result)
    common.replace_section(args.markdown, "throughput", render(result), title="Performance")
    print(f"wrote {args.json} and {args.markdown} ({result['total_seconds']:.0f} s)", flush=True)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
