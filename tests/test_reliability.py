"""Reliability: SIGKILL + resume equals an uninterrupted run, the divergence guard keeps the last
good checkpoint, and a crash half way through writing outputs leaves the previous ones intact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as Lg
import pytest
import torch

from lightning_unlearn import GradientAscent, GradientAscentDescent
from lightning_unlearn.callbacks import FiniteModelCheckpoint, StepSeeding
from lightning_unlearn.configs import check_batch_budget, check_strategy
from lightning_unlearn.data import UnlearningDataModule
from lightning_unlearn.io import staged_outputs
from lightning_unlearn.methods.base import DivergenceError
from lightning_unlearn.testing import FaultInjection

HERE = Path(__file__).resolve().parent


def run_training(
    model_dir,
    corpus_dir,
    out_dir,
    *,
    steps=6,
    every=2,
    ckpt_path=None,
    fault=None,
    method="GradientAscentDescent",
    callbacks=(),
    **module_kwargs,
):
    """GA+GD on the tiny corpus: 4 forget batches per epoch, so 6 steps cross an epoch boundary.

    Returns the trained module. Also the child process of the SIGKILL test runs this.
    """
    torch.set_num_threads(1)
    Lg.seed_everything(7, verbose=False)
    out = Path(out_dir)
    cls = {"GradientAscentDescent": GradientAscentDescent, "GradientAscent": GradientAscent}[method]
    module_kwargs = {"learning_rate": 1e-2, "warmup_ratio": 0.0, **module_kwargs}
    module = cls(str(model_dir), **module_kwargs)
    data = UnlearningDataModule(
        str(model_dir),
        forget=str(Path(corpus_dir) / "forget.jsonl"),
        retain=str(Path(corpus_dir) / "retain.jsonl"),
        max_length=64,
        batch_size=2,
        cache_dir=str(out / "cache"),
    )
    cbs = [
        StepSeeding(),
        FiniteModelCheckpoint(
            dirpath=str(out / "checkpoints"),
            save_last=True,
            save_top_k=0,
            every_n_train_steps=every,
        ),
        *callbacks,
    ]
    if fault is not None:
        cbs.append(FaultInjection(**fault))
    trainer = Lg.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=cbs,
        default_root_dir=str(out),
    )
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return module


def weights(module):
    return {k: v.detach().clone() for k, v in module.hf_model.state_dict().items()}


def max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def load_ckpt(path):
    return torch.load(path, map_location="cpu", weights_only=True)


# ------------------------------------------------------------------ resume after SIGKILL
@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(
    tiny_model_dir, tiny_corpus_dir, tmp_path, monkeypatch
):
    killed = tmp_path / "killed"
    marker = tmp_path / "hang.marker"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from test_reliability import run_training;"
        "run_training(sys.argv[2], sys.argv[3], sys.argv[4],"
        " fault={'at_step': 3, 'kind': 'hang', 'marker': sys.argv[5]})"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            str(HERE),
            str(tiny_model_dir),
            str(tiny_corpus_dir),
            str(killed),
            str(marker),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    # meanwhile, the uninterrupted run in this process
    full = weights(run_training(tiny_model_dir, tiny_corpus_dir, tmp_path / "full"))
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert child.poll() is None, child.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "the child never reached step 3"
        time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=60) == -signal.SIGKILL
    last = killed / "checkpoints" / "last.ckpt"
    state = load_ckpt(last)
    assert state["global_step"] == 2  # checkpoints every 2 steps; killed during step 3
    assert state["UnlearningDataModule"] == {"epoch": 0, "batches_done": 2}
    step2 = last.read_bytes()  # the resumed run below replaces last.ckpt

    resumed = weights(run_training(tiny_model_dir, tiny_corpus_dir, killed, ckpt_path="last"))
    assert max_diff(full, resumed) <= 1e-6

    # control: without restoring the data position the resumed run differs, so the test can fail
    monkeypatch.setattr(UnlearningDataModule, "load_state_dict", lambda self, state: None)
    again = tmp_path / "again"
    again.mkdir()
    (again / "checkpoints").mkdir()
    (again / "checkpoints" / "last.ckpt").write_bytes(step2)
    naive = weights(run_training(tiny_model_dir, tiny_corpus_dir, again, ckpt_path="last"))
    assert max_diff(full, naive) > 1e-4


def test_retain_stream_continues_across_epochs_and_resumes(tiny_datamodule_kwargs):
    dm = UnlearningDataModule(**tiny_datamodule_kwargs, batch_size=2)

    def retain_rows(epoch, resume=None, n=None):
        if resume is not None:
            dm.load_state_dict({"epoch": resume[0], "batches_done": resume[1]})
        loader = dm.train_dataloader()
        for part in loader.flattened:
            part.sampler.set_epoch(epoch)  # what Lightning does every epoch
        rows = [tuple(b["retain"]["input_ids"][0].tolist()) for b, _, _ in loader]
        return rows[:n]

    epoch0, epoch1 = retain_rows(0), retain_rows(1)
    assert len(epoch0) == 4
    assert retain_rows(0, resume=(0, 3)) == epoch0[3:]
    assert retain_rows(1, resume=(1, 1)) == epoch1[1:]
    # a checkpoint taken at the end of epoch 0 resumes at the start of epoch 1
    assert retain_rows(1, resume=(0, 4)) == epoch1


# ------------------------------------------------------------------ divergence guard
@pytest.mark.parametrize(
    ("kind", "words"),
    [("nan_loss", "non-finite training loss"), ("nan_grad", "non-finite gradient")],
)
def test_scripted_nan_stops_naming_the_step_and_keeps_last_good_checkpoint(
    tiny_model_dir, tiny_corpus_dir, tmp_path, kind, words
):
    with pytest.raises(DivergenceError, match=rf"{words}.* at step 3"):
        run_training(
            tiny_model_dir, tiny_corpus_dir, tmp_path, every=1, fault={"at_step": 3, "kind": kind}
        )
    state = load_ckpt(tmp_path / "checkpoints" / "last.ckpt")
    assert state["global_step"] == 3  # the steps before the fault, not the poisoned one
    assert all(torch.isfinite(t).all() for t in state["state_dict"].values())


class _PoisonAfterStep(Lg.Callback):
    """Overflow the weights after the optimizer step of step ``at`` (finite loss and gradients)."""

    def __init__(self, at):
        self.at = at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at:
            with torch.no_grad():
                pl_module.hf_model.lm_head.weight[0, 0] = float("inf")


def test_checkpoint_refuses_non_finite_weights(tiny_model_dir, tiny_corpus_dir, tmp_path):
    with pytest.raises(
        DivergenceError, match=r"lm_head.weight' is not finite at step 2.*last.ckpt"
    ):
        run_training(
            tiny_model_dir, tiny_corpus_dir, tmp_path, every=1, callbacks=[_PoisonAfterStep(2)]
        )
    state = load_ckpt(tmp_path / "checkpoints" / "last.ckpt")
    assert state["global_step"] == 1
    assert all(torch.isfinite(t).all() for t in state["state_dict"].values())


def test_max_forget_nll_stops_gradient_ascent_running_away(
    trained_tiny_model_dir, tiny_corpus_dir, tmp_path
):
    from lightning_unlearn.losses import token_nll

    probe = GradientAscent(str(trained_tiny_model_dir))
    probe.configure_model()
    data = UnlearningDataModule(
        str(trained_tiny_model_dir),
        forget=str(tiny_corpus_dir / "forget.jsonl"),
        max_length=64,
        batch_size=2,
        cache_dir=str(tmp_path / "probe-cache"),
    )
    with torch.no_grad():
        start = max(
            token_nll(probe(b["forget"]), b["forget"]["labels"]).item()
            for b, _, _ in data.train_dataloader()
        )
    bound = start + 1.0  # no batch is above it before training
    with pytest.raises(
        DivergenceError, match=r"forget NLL (\d+\.\d+) at step (\d+) is above max_forget_nll"
    ) as err:
        run_training(
            trained_tiny_model_dir,
            tiny_corpus_dir,
            tmp_path / "a",
            method="GradientAscent",
            steps=40,
            every=None,
            learning_rate=3e-2,
            max_forget_nll=bound,
        )
    import re

    value, step = re.search(r"forget NLL (\d+\.\d+) at step (\d+)", str(err.value)).groups()
    assert float(value) > bound and int(step) > 0
    # a bound above what the run reaches lets the same run finish
    module = run_training(
        trained_tiny_model_dir,
        tiny_corpus_dir,
        tmp_path / "b",
        method="GradientAscent",
        steps=2,
        every=None,
        learning_rate=1e-4,
        max_forget_nll=1e4,
    )
    assert module.trainer.global_step == 2
    with pytest.raises(ValueError, match="max_forget_nll must be > 0"):
        GradientAscent(str(trained_tiny_model_dir), max_forget_nll=-1.0)


# ------------------------------------------------------------------ atomic outputs
def _half_way_save(monkeypatch):
    """save_pretrained writes config.json, then crashes before the weights."""

    def broken(self, path, *args, **kwargs):
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "config.json").write_text("{}")
        raise OSError("disk full (injected)")

    monkeypatch.setattr("transformers.PreTrainedModel.save_pretrained", broken)


def test_export_failing_half_way_leaves_the_previous_model(tiny_model_dir, tmp_path, monkeypatch):
    module = GradientAscent(str(tiny_model_dir))
    module.configure_model()
    out = module.export(tmp_path / "model")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _half_way_save(monkeypatch)
    with pytest.raises(OSError, match="injected"):
        module.export(out, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary left


def test_staged_outputs_publish_all_or_nothing(tiny_model_dir, tmp_path, monkeypatch):
    from lightning_unlearn.evaluation import build_report, write_report

    out = tmp_path / "run"
    module = GradientAscent(str(tiny_model_dir))
    module.configure_model()
    metrics = {"forget/ppl": 10.0, "approximate/ppl": 12.0}
    report = build_report(
        model="m", method="GA", steps=1, seconds=1.0, before=metrics, after=metrics
    )
    with staged_outputs(out) as staging:
        module.export(staging / "model")
        write_report(report, staging)
    previous = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert {"report.json", "report.md", "model/config.json"} <= set(previous)

    # second run: the report is written, then the export crashes half way
    _half_way_save(monkeypatch)
    new_report = {**report, "steps": 99}
    with pytest.raises(OSError, match="injected"), staged_outputs(out) as staging:
        write_report(new_report, staging)
        module.export(staging / "model")
    now = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert now == previous
    assert json.loads((out / "report.json").read_text())["steps"] == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["documents.csv", "model", "perplexity.png", "report.json", "report.md"]
    )


# ------------------------------------------------------------------ checks (unit)
def test_batch_budget_names_the_product_and_the_fix():
    assert check_batch_budget(batch_size=4, max_length=512, retain_per_forget=1) == 4096
    with pytest.raises(
        ValueError, match=r"\(batch_size 64 \+ 64 retain\) x max_length 4096 = 524,288"
    ):
        check_batch_budget(batch_size=64, max_length=4096)
    assert check_batch_budget(batch_size=64, max_length=4096, with_retain=False) == 262_144
    assert check_batch_budget(batch_size=64, max_length=4096, max_batch_tokens=None) == 524_288
    # a retain batch of its own size: 56 forget + 8 retain windows, at the limit
    assert check_batch_budget(batch_size=56, max_length=4096, retain_batch_size=8) == 262_144


def test_strategy_names():
    check_strategy("ddp")
    check_strategy("auto")
    with pytest.raises(ValueError, match="deepspeed_zero3.yaml") as err:
        check_strategy("deepspeed_zero3")
    assert "is a preset" in str(err.value)
    with pytest.raises(ValueError, match="unknown strategy 'deepspeed_zero9'.*deepspeed_stage_3"):
        check_strategy("deepspeed_zero9")
