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
import math
import random
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

IMPLS = ("lightning_unlearn", "hf_trainer_padded", "torch_loop")
METHODS = {
    "GA": ("GradientAscent", None),
    "GA+GD": ("GradientAscentDescent", "nll"),
    "GA+KL": ("GradientAscentKL", "kl"),
}
LEARNING_RATE = 1e-5


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


def _texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]


def padding_waste(tokenizer, texts: list[str], max_length: int) -> float:
    """Fraction of padded positions when each document is chunked and padded to ``max_length``."""
    from lightning_unlearn.data.tokenize import chunk_documents

    cols, _ = chunk_documents(tokenizer, texts, max_length=max_length)
    real = sum(len(x) for x in cols["input_ids"])
    return 1.0 - real / (len(cols["input_ids"]) * max_length)


# ----------------------------------------------------------------------------------- one row
class _Clock:
    def __init__(self, warmup: int) -> None:
        self.warmup, self.step, self.seconds, self.real, self.positions = warmup, 0, 0.0, 0, 0
        self.ref_positions = 0
        self.step_seconds: list[float] = []  # each timed step
        self.step_tokens: list[int] = []

    def start(self) -> None:
        self._t = time.perf_counter()

    def stop(self, real: int, positions: int, ref_positions: int = 0) -> None:
        elapsed = time.perf_counter() - self._t
        self.step += 1
        if self.step > self.warmup:
            self.seconds += elapsed
            self.step_seconds.append(elapsed)
            self.step_tokens.append(real)
            self.real += real
            self.positions += positions
            self.ref_positions += ref_positions


def _ref_positions(batch: dict, retain_term: str | None) -> int:
    return (
        int(batch["retain"]["input_ids"].numel())
        if retain_term == "kl" and "retain" in batch
        else 0
    )


def _data_module(model_dir: str, corpus: Path, args, retain_term: str | None, cache: Path):
    from lightning_unlearn.data import UnlearningDataModule

    return UnlearningDataModule(
        model_dir,
        forget=str(corpus / "forget.jsonl"),
        retain=str(corpus / "retain.jsonl") if retain_term else None,
        max_length=args.max_length,
        packing=True,
        batch_size=args.batch_size,
        cache_dir=str(cache),
        seed=0,
    )


def run_lightning(args, corpus: Path, cache: Path, clock: _Clock) -> None:
    import lightning as L

    import lightning_unlearn
    from lightning_unlearn.demo import (
        cpu_trainer,  # CPU, one device, no logger / checkpoints / bars
    )
    from lightning_unlearn.models import LoraSettings

    cls_name, retain_term = METHODS[args.method]
    data = _data_module(args.model, corpus, args, retain_term, cache)
    module = getattr(lightning_unlearn, cls_name)(
        args.model,
        learning_rate=LEARNING_RATE,
        warmup_ratio=0.0,
        scheduler="constant",
        lora=LoraSettings() if args.lora else None,
        backward=getattr(args, "backward", None),
    )

    class Clock(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            clock.start()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            real, positions = common.count_tokens(batch)
            clock.stop(real, positions, _ref_positions(batch, retain_term))

    trainer = cpu_trainer(
        max_steps=args.warmup + args.steps, limit_val_batches=0, callbacks=[Clock()]
    )
    trainer.fit(module, datamodule=data)


def _objective(model, reference, retain_term: str | None, forget: dict, retain: dict | None):
    """The same objective in plain PyTorch: -NLL(forget) [+ NLL(retain) | + KL(ref || model)]."""
    from lightning_unlearn.losses import kl_to_reference, token_nll

    def logits(m, b):
        inputs = {k: b[k] for k in ("input_ids", "attention_mask", "position_ids") if k in b}
        return m(**inputs, use_cache=False).logits

    loss = -token_nll(logits(model, forget), forget["labels"])
    if retain_term == "nll":
        loss = loss + token_nll(logits(model, retain), retain["labels"])
    elif retain_term == "kl":
        with torch.no_grad():
            ref = logits(reference, retain)
        loss = loss + kl_to_reference(logits(model, retain), ref, retain["labels"])
    return loss


def run_torch_loop(args, corpus: Path, cache: Path, clock: _Clock) -> None:
    from lightning_unlearn.models import freeze, load_causal_lm

    _, retain_term = METHODS[args.method]
    data = _data_module(args.model, corpus, args, retain_term, cache)
    data.setup("fit")
    loaders = data.train_dataloader().iterables
    torch.manual_seed(0)
    model = load_causal_lm(args.model)
    model.train()
    reference = freeze(load_causal_lm(args.model)) if retain_term == "kl" else None
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE, weight_decay=0.0
    )
    forget_iter = iter(loaders["forget"])
    retain_iter = iter(loaders["retain"]) if "retain" in loaders else None
    for _ in range(args.warmup + args.steps):
        forget = next(forget_iter)
        retain = next(retain_iter) if retain_iter is not None else None
        clock.start()
        loss = _objective(model, reference, retain_term, forget, retain)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        batch = {"forget": forget, **({"retain": retain} if retain is not None else {})}
        real, positions = common.count_tokens(batch)
        clock.stop(real, positions, _ref_positions(batch, retain_term))


def run_hf_trainer(args, corpus: Path, cache: Path, clock: _Clock) -> None:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from lightning_unlearn.data.tokenize import chunk_documents
    from lightning_unlearn.models import freeze, load_causal_lm, load_tokenizer

    _, retain_term = METHODS[args.method]
    tokenizer = load_tokenizer(args.model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def padded(split: str) -> list[torch.Tensor]:
        cols, _ = chunk_documents(
            tokenizer, _texts(corpus / f"{split}.jsonl"), max_length=args.max_length
        )
        out = []
        for ids in cols["input_ids"]:
            row = torch.full((args.max_length,), pad, dtype=torch.long)
            row[: len(ids)] = torch.tensor(ids)
            out.append((row, len(ids)))
        return out

    forget = padded("forget")
    retain = padded("retain") if retain_term else None
    rows = []
    for i, (ids, n) in enumerate(forget):
        row = {"forget_ids": ids, "forget_len": n}
        if retain:
            row["retain_ids"], row["retain_len"] = retain[i % len(retain)]
        rows.append(row)

    def part(features, name):
        ids = torch.stack([f[f"{name}_ids"] for f in features])
        lengths = torch.tensor([f[f"{name}_len"] for f in features])
        mask = (torch.arange(ids.size(1)).unsqueeze(0) < lengths.unsqueeze(1)).long()
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": ids.masked_fill(mask == 0, -100),
        }

    def collate(features):
        batch = {"forget": part(features, "forget")}
        if retain_term:
            batch["retain"] = part(features, "retain")
        return batch

    torch.manual_seed(0)
    model = load_causal_lm(args.model)
    reference = freeze(load_causal_lm(args.model)) if retain_term == "kl" else None
    pending: dict[str, Any] = {}

    class UnlearningTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            pending["batch"] = inputs
            return _objective(model, reference, retain_term, inputs["forget"], inputs.get("retain"))

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            clock.start()

        def on_step_end(self, *a, **k):
            batch = pending["batch"]
            real, positions = common.count_tokens(batch)
            clock.stop(real, positions, _ref_positions(batch, retain_term))

    targs = TrainingArguments(
        output_dir=str(cache / "hf-trainer"),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.warmup + args.steps,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        eval_strategy="no",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
    )
    trainer = UnlearningTrainer(
        model=model, args=targs, train_dataset=rows, data_collator=collate, callbacks=[Clock()]
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # no end-of-training metrics dump on stdout
    trainer.train()


def _parameters(model_dir: str) -> int:
    """Parameter count from the checkpoint's tensors (no model built, no torch kernels run)."""
    from safetensors import safe_open

    total, seen = 0, set()
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as fh:
            for name in fh.keys():  # noqa: SIM118 - safe_open is not iterable
                if name in seen:
                    continue
                seen.add(name)
                shape = fh.get_slice(name).get_shape()
                total += math.prod(shape)
    return total


def run_row(args) -> dict[str, Any]:
    """One (impl, method, max_length) measurement in this process."""
    from lightning_unlearn.demo import quiet

    quiet()
    common.set_threads(args.threads)
    corpus = Path(args.corpus)
    cache = Path(args.workdir)
    clock = _Clock(args.warmup)
    runner = {
        "lightning_unlearn": run_lightning,
        "hf_trainer_padded": run_hf_trainer,
        "torch_loop": run_torch_loop,
    }[args.impl]
    runner(args, corpus, cache, clock)
    from transformers import AutoConfig

    from lightning_unlearn.models import load_causal_lm

    config = AutoConfig.from_pretrained(args.model)
    n = common.param_count(load_causal_lm(args.model)) if args.params is None else args.params
    train_fpt = common.flops_per_token(n, config, args.max_length, backward=True)
    fwd_fpt = common.flops_per_token(n, config, args.max_length, backward=False)
    flops = (clock.positions - clock.ref_positions) * train_fpt + clock.ref_positions * (
        train_fpt + fwd_fpt
    )
    # for GA+KL the retain sequences are trained (6N) and also run through the reference (2N)
    return {
        "impl": args.impl,
        "method": args.method + (" (LoRA)" if args.lora else ""),
        "lora": bool(args.lora),
        "max_length": args.max_length,
        "batch_size": args.batch_size,
        "timed_steps": args.steps,
        "seconds": clock.seconds,
        "real_tokens": clock.real,
        "positions": clock.positions,
        "model_flops": flops,
        "seconds_per_step": clock.seconds / max(1, args.steps),
        "step_seconds": clock.step_seconds,
        "step_tokens": clock.step_tokens,
        "backward": getattr(args, "backward", None),
        "peak_rss_mb": common.peak_rss_mb(),
        "params": n,
    }


# ----------------------------------------------------------------------------------- backward orders
#: (method, LoRA): the two pairs whose memory ratio the backward order should bring down
ORDER_ROWS = (("GA", False), ("GA+GD", False), ("GA", True), ("GA+KL", True))


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


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
            argv = _row_argv(args, "lightning_unlearn", method, length, args.batch_size, steps,
                             args.warmup, lora, params, out, backward=order)  # fmt: skip
            row = finish_row(_isolated(args.isolation, argv, out), waste=0.0, peak=peak)
            median = _median(row["step_seconds"])
            row["median_step_seconds"] = median
            row["median_tokens_per_s"] = _median(row["step_tokens"]) / median
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
    common.replace_section(args.markdown, "backward_orders", render_orders(result),
                           title="Performance")  # fmt: skip
    print(f"wrote {path} and {args.markdown}", flush=True)
    if tmp is not None:
        tmp.cleanup()
    return 0


def order_checks(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue #19's targets: memory of the retain methods over GA's (sequential), and sequential
    tokens/s over joint's."""
    by = {(r["method"], r["backward"]): r for r in rows}
    out = []
    for method, base, limit in (("GA+GD", "GA", 1.10), ("GA+KL (LoRA)", "GA (LoRA)", 1.15)):
        for order in ("joint", "sequential"):
            ga = by.get((base, order))
            r = by.get((method, order))
            if ga and r:
                ratio = r["peak_rss_mb"] / ga["peak_rss_mb"]
                out.append({"check": f"{method} / {base} peak RSS, {order}", "value": ratio,
                            "target": limit, "ok": ratio <= limit if order == "sequential" else None,
                            "upper_bound": True})  # fmt: skip
        joint, seq = by.get((method, "joint")), by.get((method, "sequential"))
        if joint and seq:
            ratio = seq["median_tokens_per_s"] / joint["median_tokens_per_s"]
            out.append({"check": f"{method}: sequential / joint tokens/s (medians)",
                        "value": ratio, "target": 0.97, "ok": ratio >= 0.97})  # fmt: skip
    return out


def render_orders(result: dict[str, Any]) -> str:
    lines = [
        common.provenance_line(result["provenance"]),
        "",
        f"`benchmarks/throughput.py --backward-orders`: the library's two backward orders on "
        f"`{Path(result['model']).name}`, max_length {result['max_length']}, batch "
        f"{result['batch_size']}, {result['warmup']} warm-up step(s) then {result['timed_steps']} "
        "timed steps per row, one fresh process per row (its own peak RSS), rows interleaved "
        "(joint first for one method, sequential first for the next). Tokens/s from the median "
        "step.",
        "",
        "| method | backward | median s/step | tokens/s (median step) | peak RSS (MiB) |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['method']} | {r['backward']} | {r['median_step_seconds']:.2f} | "
            f"{r['median_tokens_per_s']:.1f} | {r['peak_rss_mb']:.0f} |"
        )
    lines += ["", "| check | measured | target | met |", "|---|---|---|---|"]
    for c in result["checks"]:
        op = "≤" if c.get("upper_bound") else "≥"
        met = "—" if c["ok"] is None else ("yes" if c["ok"] else "**no**")
        lines.append(f"| {c['check']} | {c['value']:.3f} | {op} {c['target']:.2f} | {met} |")
    if result.get("notes"):
        lines += ["", result["notes"]]
    return "\n".join(lines)


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


def checks(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, as ratios within this run."""
    by = {(r["impl"], r["method"], r["max_length"]): r for r in rows}
    out = []
    for (impl, method, length), r in sorted(by.items(), key=lambda kv: (kv[0][2], kv[0][1])):
        if impl != "lightning_unlearn":
            continue
        loop = by.get(("torch_loop", method, length))
        hf = by.get(("hf_trainer_padded", method, length))
        if loop:
            ratio = r["tokens_per_s"] / loop["tokens_per_s"]
            out.append(
                {
                    "check": f"{method} @ {length}: lightning_unlearn / torch_loop tokens/s",
                    "value": ratio,
                    "target": 0.95,
                    "ok": ratio >= 0.95,
                }
            )
        if hf:
            need = 0.95 / (1.0 - hf["padding_waste"])
            ratio = r["tokens_per_s"] / hf["tokens_per_s"]
            out.append(
                {
                    "check": f"{method} @ {length}: lightning_unlearn / hf_trainer_padded real tokens/s",
                    "value": ratio,
                    "target": need,
                    "ok": ratio >= need,
                }
            )
        out.append(
            {
                "check": f"{method} @ {length}: lightning_unlearn MFU",
                "value": r["mfu"],
                "target": 0.55,
                "ok": r["mfu"] >= 0.55,
            }
        )
    for length in sorted({r["max_length"] for r in rows}):
        for suffix, limit in (("", 1.6), (" (LoRA)", 1.15)):
            ga = by.get(("lightning_unlearn", "GA" + suffix, length))
            kl = by.get(("lightning_unlearn", "GA+KL" + suffix, length))
            if ga and kl:
                ratio = kl["peak_rss_mb"] / ga["peak_rss_mb"]
                out.append(
                    {
                        "check": f"GA+KL{suffix} / GA{suffix} peak RSS @ {length}",
                        "value": ratio,
                        "target": limit,
                        "ok": ratio <= limit,
                        "upper_bound": True,
                    }
                )
    return out


def render(result: dict[str, Any]) -> str:
    rows = result["rows"]
    lines = [
        common.provenance_line(result["provenance"]),
        "",
        f"Model: `{Path(result['model']).name}` ({result['params'] / 1e6:.1f} M parameters), fp32. "
        f"Matmul peak measured in the same run: **{result['matmul_peak_gflops']:.1f} GFLOP/s** "
        f"(best of {result['matmul_repeats']} fp32 {result['matmul_size']}² matmuls on "
        f"{result['provenance']['machine']['torch_threads']} threads). Batch "
        f"{result['batch_size']} × max_length, {result['warmup']} warm-up step(s), then "
        f"{result['steps']} timed step(s) at 512 and {result['steps_long']} at longer lengths; one "
        "fresh process per row. Corpus: whole standard-library modules (forget) and other modules "
        f"(retain), {result['documents']} each. Real tokens = forget + retain tokens that are not "
        "padding. MFU: model FLOPs (PaLM: 6N + 12·L·d·T per trained position, 2N + 4·L·d·T per "
        "reference-forward position, padding included) per second over the matmul peak.",
        "",
        "| impl | method | max_length | real tokens/s | padded positions/s | padding waste | MFU | "
        "peak RSS (MiB) | s/step |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['impl']} | {r['method']} | {r['max_length']} | {r['tokens_per_s']:.1f} | "
            f"{r['positions_per_s']:.1f} | {100 * r['padding_waste']:.1f}% | {100 * r['mfu']:.1f}% | "
            f"{r['peak_rss_mb']:.0f} | {r['seconds_per_step']:.2f} |"
        )
    waste = result.get("padding_waste_by_length")
    if waste:
        lines += [
            "",
            "Padding waste of per-document chunking (what packing recovers), this corpus: "
            + ", ".join(f"{100 * v:.1f}% at {k}" for k, v in waste.items())
            + ".",
        ]
    lines += [
        "",
        "Targets (ratios within this run):",
        "",
        "| check | measured | target | met |",
        "|---|---|---|---|",
    ]
    for c in result["checks"]:
        op = "≤" if c.get("upper_bound") else "≥"
        pct = "MFU" in c["check"]
        value = f"{100 * c['value']:.1f}%" if pct else f"{c['value']:.3f}"
        target = f"{100 * c['target']:.0f}%" if pct else f"{c['target']:.3f}"
        lines.append(
            f"| {c['check']} | {value} | {op} {target} | {'yes' if c['ok'] else '**no**'} |"
        )
    if result.get("notes"):
        lines += ["", result["notes"]]
    return "\n".join(lines)


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
        default=None,
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
    texts = _texts(args.corpus / "forget.jsonl") + _texts(args.corpus / "retain.jsonl")
    from transformers import AutoConfig  # noqa: F401  (import cost outside the timed rows)

    params = _parameters(args.model)
    # padding waste of per-document chunking at several lengths (tokenizer only: cheap)
    waste_by_length = {
        str(n): padding_waste(tokenizer, texts, n)
        for n in sorted({512, 1024, 2048, 4096, *args.lengths})
    }
    if args.backward_orders:
        return backward_orders(args, peak, params, started, tmp)
    rows = []
    for length in args.lengths:
        waste = padding_waste(tokenizer, texts, length)
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
