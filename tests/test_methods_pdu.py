"""Primal-dual unlearning (PDU): the forget logits flatten, and the dual variable lambda.

Lambda is checked step by step against its update rule (per step, per epoch, under gradient
accumulation, held in warm-up), it travels in the state dict, and a killed and resumed PDU run
equals an uninterrupted one (the machinery of test_reliability.py).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import lightning as Lg
import pytest
import torch
from test_methods_contract import PDU_KWARGS

from lightning_unlearn import PrimalDualUnlearning
from lightning_unlearn.testing import build_method as build
from lightning_unlearn.testing import fit_on_batches as fit

HERE = Path(__file__).resolve().parent


def test_pdu_flattens_forget_logits(unlearned, forget_batch):
    """The method table's PDU run (``PDU_KWARGS``): the flatness term halves at least (its
    forget NLL rises: test_methods_contract.py)."""
    run = unlearned("pdu")
    run.module.eval()
    with torch.no_grad():
        before = run.initial.forget_loss(forget_batch).item()
        assert run.module.forget_loss(forget_batch).item() < 0.5 * before


# ----------------------------------------------------------------------------- PDU's lambda
class DualRecorder(Lg.Callback):
    """Per training step: lambda before it, the logged losses, and lambda after it."""

    def __init__(self):
        self.before, self.after, self.retain, self.forget, self.loss, self.logged = (
            [] for _ in range(6)
        )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.before.append(pl_module.dual_lambda.item())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        metrics = trainer.callback_metrics
        self.retain.append(float(metrics["train/retain_loss"]))
        self.forget.append(float(metrics["train/forget_loss"]))
        self.loss.append(float(metrics["train/loss"]))
        self.after.append(pl_module.dual_lambda.item())

    def on_train_epoch_end(self, trainer, pl_module):
        self.logged.append(float(trainer.callback_metrics["train/lambda"]))


@pytest.mark.parametrize("bound", [0.0, 2.0], ids=["violated-grows", "holds-shrinks-to-0"])
def test_pdu_lambda_follows_the_update_rule_each_step(
    bound, trained_tiny_model_dir, forget_batch, retain_batch
):
    kwargs = {**PDU_KWARGS, "retain_bound": bound}
    module = build(PrimalDualUnlearning, trained_tiny_model_dir, learning_rate=3e-3, **kwargs)
    rec = DualRecorder()
    fit(module, forget_batch, retain_batch, 3, callbacks=[rec])
    lam, eta = kwargs["dual_init"], kwargs["dual_lr"]
    for k in range(3):
        assert rec.before[k] == lam  # the lambda this step trained with ...
        # ... weighted its retain term: loss = forget + lambda * retain
        assert rec.loss[k] == pytest.approx(rec.forget[k] + lam * rec.retain[k], rel=1e-6)
        lam = max(0.0, lam + eta * (rec.retain[k] - bound))  # the rule, in plain Python
        assert rec.after[k] == lam, k  # exactly
    assert module.dual_lambda.item() == lam == module.retain_weight
    assert rec.logged[-1] == pytest.approx(lam, rel=1e-6)  # logged as train/lambda (float32)
    if bound == 0.0:
        assert lam > kwargs["dual_init"]
    else:
        assert lam == 0.0 and rec.after[0] > 0.0  # shrank step by step, then projected to 0
    assert int(module.dual_retain_count) == 0  # every step's record was used


def test_pdu_epoch_mode_updates_once_from_the_epochs_mean(
    trained_tiny_model_dir, forget_batch, retain_batch
):
    kwargs = {**PDU_KWARGS, "dual_update": "epoch"}
    module = build(PrimalDualUnlearning, trained_tiny_model_dir, learning_rate=3e-3, **kwargs)
    rec = DualRecorder()
    fit(module, forget_batch, retain_batch, 3, callbacks=[rec])  # one epoch of three steps
    assert rec.before == rec.after == [kwargs["dual_init"]] * 3  # fixed during the epoch
    mean = (((0.0 + rec.retain[0]) + rec.retain[1]) + rec.retain[2]) / 3
    expected = max(0.0, kwargs["dual_init"] + kwargs["dual_lr"] * (mean - kwargs["retain_bound"]))
    assert module.dual_lambda.item() == expected > kwargs["dual_init"]


def test_pdu_step_mode_with_gradient_accumulation_updates_per_optimizer_step(
    trained_tiny_model_dir, forget_batch, retain_batch
):
    module = build(PrimalDualUnlearning, trained_tiny_model_dir, learning_rate=3e-3, **PDU_KWARGS)
    rec = DualRecorder()
    # four batches, two per optimizer step: lambda moves twice, by the mean of each pair
    fit(
        module,
        forget_batch,
        retain_batch,
        4,
        callbacks=[rec],
        accumulate_grad_batches=2,
        max_steps=2,
    )
    lam, eta, bound = PDU_KWARGS["dual_init"], PDU_KWARGS["dual_lr"], PDU_KWARGS["retain_bound"]
    assert rec.before[:2] == [lam, lam]
    for pair in (rec.retain[0:2], rec.retain[2:4]):
        lam = max(0.0, lam + eta * ((0.0 + pair[0] + pair[1]) / 2 - bound))
    assert rec.before[2] == rec.after[1] != PDU_KWARGS["dual_init"]
    assert module.dual_lambda.item() == lam


def test_pdu_warmup_keeps_lambda(trained_tiny_model_dir, forget_batch, retain_batch):
    module = build(PrimalDualUnlearning, trained_tiny_model_dir, dual_warmup_epochs=1, **PDU_KWARGS)
    fit(module, forget_batch, retain_batch, 3)
    assert module.dual_lambda.item() == PDU_KWARGS["dual_init"]
    assert int(module.dual_retain_count) == 0


def test_pdu_lambda_is_in_the_state_dict(tiny_model_dir, forget_batch, retain_batch, tmp_path):
    module = build(PrimalDualUnlearning, tiny_model_dir, **PDU_KWARGS)
    trainer = fit(module, forget_batch, retain_batch, 2)
    lam = module.dual_lambda.item()
    assert lam != PDU_KWARGS["dual_init"]
    assert module.state_dict()["dual_lambda"].item() == lam
    trainer.save_checkpoint(tmp_path / "pdu.ckpt")
    state = torch.load(tmp_path / "pdu.ckpt", map_location="cpu", weights_only=True)
    assert state["state_dict"]["dual_lambda"].item() == lam
    fresh = build(PrimalDualUnlearning, tiny_model_dir, **PDU_KWARGS)
    fresh.load_state_dict(state["state_dict"], strict=False)
    assert fresh.dual_lambda.item() == lam == fresh.retain_weight
    # setting the retain weight sets lambda (the base class's one knob)
    fresh.retain_weight = 3.0
    assert fresh.dual_lambda.item() == 3.0
    with pytest.raises(ValueError, match=r"retain_weight \(lambda\) must be >= 0, got -1"):
        fresh.retain_weight = -1


# ------------------------------------------------------------------ PDU: SIGKILL, then resume
#: PDU in test_reliability.run_training's GA+GD run: 4 forget batches per epoch, 6 steps,
#: checkpoints every 2 steps. The untrained tiny model's retain NLL (~6) is above the bound.
RESUME_KWARGS = {"retain_bound": 5.0, "dual_init": 1.0, "dual_lr": 0.5}


def run_pdu(model_dir, corpus_dir, out_dir, **kwargs):
    """test_reliability.run_training (same data, seeding, checkpoints, fault injection) with
    PrimalDualUnlearning in place of GradientAscentDescent. The SIGKILL child runs this too."""
    import test_reliability

    with mock.patch.object(test_reliability, "GradientAscentDescent", PrimalDualUnlearning):
        return test_reliability.run_training(
            model_dir, corpus_dir, out_dir, **{**RESUME_KWARGS, **kwargs}
        )


def start_hanging_child(model_dir, corpus_dir, out_dir, marker, *, at_step, dual_update):
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from test_methods_pdu import run_pdu;"
        "run_pdu(sys.argv[2], sys.argv[3], sys.argv[4], dual_update=sys.argv[6],"
        " fault={'at_step': int(sys.argv[7]), 'kind': 'hang', 'marker': sys.argv[5]})"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    args = [HERE, model_dir, corpus_dir, out_dir, marker, dual_update, at_step]
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def kill_when_marked(child, marker, *, timeout=240):
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert child.poll() is None, child.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "the child never reached the fault"
        time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=60) == -signal.SIGKILL


@pytest.mark.slow
@pytest.mark.parametrize(
    "dual_update, kill_at, saved_at",
    [("step", 2, 2), ("epoch", 4, 4)],
    ids=["step-mid-epoch", "epoch-at-epoch-boundary"],
)
def test_pdu_sigkill_then_resume_equals_uninterrupted_run(
    dual_update, kill_at, saved_at, tiny_model_dir, tiny_corpus_dir, tmp_path
):
    from test_reliability import load_ckpt, weights

    killed, marker = tmp_path / "killed", tmp_path / "hang.marker"
    # the child hangs at the batch after `kill_at` optimizer steps and is killed there
    child = start_hanging_child(
        tiny_model_dir, tiny_corpus_dir, killed, marker, at_step=kill_at, dual_update=dual_update
    )
    full = run_pdu(tiny_model_dir, tiny_corpus_dir, tmp_path / "full", dual_update=dual_update)
    kill_when_marked(child, marker)

    last = killed / "checkpoints" / "last.ckpt"
    state = load_ckpt(last)
    assert state["global_step"] == saved_at
    saved = state["state_dict"]
    if dual_update == "step":
        assert saved["dual_lambda"].item() != RESUME_KWARGS["dual_init"]  # moved, and saved
        assert int(saved["dual_retain_count"]) == 0
    else:
        # written at the epoch's last batch, before its end-of-epoch update: the record goes along
        assert saved["dual_lambda"].item() == RESUME_KWARGS["dual_init"]
        assert int(saved["dual_retain_count"]) == 4
    step_ckpt = last.read_bytes()  # the resumed run below replaces last.ckpt

    resumed = run_pdu(
        tiny_model_dir, tiny_corpus_dir, killed, dual_update=dual_update, ckpt_path="last"
    )
    assert full.dual_lambda.item() != RESUME_KWARGS["dual_init"]
    assert resumed.dual_lambda.item() == full.dual_lambda.item()
    a, b = weights(full), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a), "weights differ after resume"

    if dual_update == "step":
        # control: a checkpoint without lambda resumes at dual_init, and the test sees it
        again = tmp_path / "again" / "checkpoints"
        again.mkdir(parents=True)
        stripped = torch.load(io.BytesIO(step_ckpt), weights_only=True)
        del stripped["state_dict"]["dual_lambda"]
        torch.save(stripped, again / "last.ckpt")
        naive = run_pdu(
            tiny_model_dir, tiny_corpus_dir, again.parent, dual_update="step", ckpt_path="last"
        )
        assert naive.dual_lambda.item() != full.dual_lambda.item()
