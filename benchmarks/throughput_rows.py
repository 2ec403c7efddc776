"""One throughput row of ``throughput.py``: the same unlearning objective trained by the library,
by a hand-written torch loop or by a padded Hugging Face ``Trainer``, its steps timed after the
warm-up, its model FLOPs and its peak RSS."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import common
import torch

IMPLS = ("lightning_unlearn", "hf_trainer_padded", "torch_loop")
METHODS = {
    "GA": ("GradientAscent", None),
    "GA+GD": ("GradientAscentDescent", "nll"),
    "GA+KL": ("GradientAscentKL", "kl"),
}
LEARNING_RATE = 1e-5


def texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]


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
            tokenizer, texts(corpus / f"{split}.jsonl"), max_length=args.max_length
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


def parameter_count(model_dir: str) -> int:
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
