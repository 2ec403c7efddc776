"""Per-document targets (#27): the banded loss by hand, the two target estimates by hand, the
per-document stop and mask, and the whole path on a tiny model."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch

from lightning_unlearn import DocumentTargetMatching, GradientAscentDescent, UnlearningDataModule
from lightning_unlearn.evaluation import Perplexity
from lightning_unlearn.evaluation.targets import (
    DocumentMask,
    DocumentStopping,
    DocumentTargeting,
    DocumentTargets,
    document_loglik,
)
from lightning_unlearn.losses import banded_target_loss
from lightning_unlearn.testing import cpu_trainer
from lightning_unlearn.workflow import UnlearningWorkflow


# ------------------------------------------------------------------ the loss, by hand
def test_banded_loss_value_and_gradient_by_hand():
    """tol = 0.2, target -2: value -1.0 (gap +1, x = 0.8 > tol: 0.8 - 0.1 = 0.7, grad +1),
    -1.9 (inside: 0, grad 0), -2.3 (gap -0.3, x = 0.1 <= tol: 0.01 / 0.4 = 0.025, grad
    -0.1 / 0.2 = -0.5), -2.5 (x = 0.3: 0.3 - 0.1 = 0.2, grad -1)."""
    value = torch.tensor([-1.0, -1.9, -2.3, -2.5], dtype=torch.float64, requires_grad=True)
    target = torch.full((4,), -2.0, dtype=torch.float64)
    loss = banded_target_loss(value, target, 0.2)
    assert loss.tolist() == pytest.approx([0.7, 0.0, 0.025, 0.2])
    loss.sum().backward()
    assert value.grad.tolist() == pytest.approx([1.0, 0.0, -0.5, -1.0])
    # continuous at the joint x = tol (value -1.6 / -2.4): both pieces give tol / 2 = 0.1
    edge = banded_target_loss(torch.tensor([-1.6, -2.4]), torch.tensor([-2.0, -2.0]), 0.2)
    assert edge.tolist() == pytest.approx([0.1, 0.1])
    # tol = 0: the distance |g| itself, gradient sign(g)
    v0 = torch.tensor([-1.5, -2.5], requires_grad=True)
    l0 = banded_target_loss(v0, torch.tensor([-2.0, -2.0]), 0.0)
    l0.sum().backward()
    assert l0.tolist() == pytest.approx([0.5, 0.5]) and v0.grad.tolist() == [1.0, -1.0]
    # the target carries no gradient
    t = torch.tensor([-2.0], requires_grad=True)
    banded_target_loss(torch.tensor([-1.0], requires_grad=True), t, 0.1).sum().backward()
    assert t.grad is None or float(t.grad.abs().sum()) == 0.0
    with pytest.raises(ValueError, match="tolerance must be finite and >= 0"):
        banded_target_loss(value, target, -0.1)
    with pytest.raises(ValueError, match="same shape"):
        banded_target_loss(value, target[:2], 0.1)


# ------------------------------------------------------------------ the targets, by hand
def test_reference_targets_by_hand():
    """shift = mean(l_seen - l_ref) over approximate = mean(0.3, 0.5, 0.4) = 0.4; error = the
    shift's standard deviation (ddof 1) = 0.1; tolerance half of it."""
    seen_approx = {0: -2.0, 1: -1.5, 2: -3.0}
    ref_approx = {0: -2.3, 1: -2.0, 2: -3.4}
    ref_forget = {5: -2.5, 6: -1.0}
    seen_forget = {5: -1.2, 6: -0.4}
    t = DocumentTargets.from_reference(seen_forget, seen_approx, ref_forget, ref_approx)
    assert t.kind == "reference"
    assert t.shift == pytest.approx(0.4)
    assert t.target == pytest.approx({5: -2.1, 6: -0.6})
    assert t.error == pytest.approx(0.1) and t.tolerance == pytest.approx(0.05)
    assert t.within({5: -2.14, 6: -0.5}) == {5: True, 6: False}
    assert t.reached({5: -2.0, 6: -0.7}) == {6}
    assert t.lookup(torch.tensor([6, 5, 6])).tolist() == pytest.approx([-0.6, -2.1, -0.6])
    with pytest.raises(KeyError, match=r"forget documents \[3\] have no per-document target"):
        t.lookup(torch.tensor([3]))
    with pytest.raises(ValueError, match="other forget documents"):
        DocumentTargets.from_reference(seen_forget, seen_approx, {5: -2.5}, ref_approx)


def test_quantile_targets_by_hand():
    """Approximate values -3, -2, -1, 0 (sorted); forget documents ranked 3rd, 1st, 2nd of three
    get the approximate quantiles at levels 5/6, 1/6 and 3/6: numpy's linear quantiles of
    [-3, -2, -1, 0] at those levels are -0.5, -2.5 and -1.5."""
    approx = {10: -1.0, 11: -3.0, 12: 0.0, 13: -2.0}
    forget = {0: -0.1, 1: -0.9, 2: -0.5}
    t = DocumentTargets.from_quantiles(forget, approx)
    assert t.kind == "quantiles" and t.shift is None
    assert t.target == pytest.approx({0: -0.5, 1: -2.5, 2: -1.5})
    # the error: each approximate value predicted from the other three at its level (k+1/2)/4
    values = np.array([-3.0, -2.0, -1.0, 0.0])
    misses = [values[k] - np.quantile(np.delete(values, k), (k + 0.5) / 4) for k in range(4)]
    assert t.error == pytest.approx(float(np.sqrt(np.mean(np.square(misses)))))
    assert t.tolerance == pytest.approx(t.error / 2)
    with pytest.raises(ValueError, match="at least two documents"):
        DocumentTargets.from_quantiles(forget, {10: -1.0})


def test_document_loglik_reads_perplexities():
    out = document_loglik({"doc_index": [3, 7, 9], "ppl": [math.e, 1.0, float("nan")]})
    assert out[3] == pytest.approx(-1.0) and out[7] == 0.0 and out[9] == -math.inf


# ------------------------------------------------------------------ the stop and the mask
class _Trainer:
    def __init__(self):
        self.global_step = 0
        self.should_stop = False


def test_the_stop_fires_when_every_document_is_inside_or_progress_stalls():
    """Progress = a larger fraction inside the bands or a smaller mean distance to them."""
    targets = DocumentTargets(target={0: -2.0, 1: -2.0}, tolerance=0.1, kind="quantiles")
    stop = DocumentStopping(patience=2)
    stop.targets = targets
    trainer = _Trainer()
    for step, values, expected in [
        (1, {0: -1.0, 1: -1.0}, False),  # none inside, distance 0.9: a first best
        (2, {0: -1.5, 1: -1.5}, False),  # none inside, distance 0.4: progress
        (3, {0: -2.05, 1: -1.5}, False),  # 1/2 inside: progress
        (4, {0: -2.05, 1: -1.6}, False),  # 1/2, distance 0.15 (best 0.2): progress
        (5, {0: -2.05, 1: -1.65}, False),  # 1/2, distance 0.125: progress
        (6, {0: -2.05, 1: -1.7}, False),  # 1/2, distance 0.1: progress
        (7, {0: -2.5, 1: -1.7}, False),  # 0/2, distance 0.35: no progress (1)
        (8, {0: -2.3, 1: -1.7}, True),  # 0/2, distance 0.25: no progress (2): stop
    ]:
        trainer.global_step = step
        assert stop.check(trainer, values) is expected, step
    assert stop.stopped_step == 8 and trainer.should_stop
    assert [h["within"] for h in stop.history] == [0.0, 0.0, 0.5, 0.5, 0.5, 0.5, 0.0, 0.0]
    assert [h["distance"] for h in stop.history][:2] == pytest.approx([0.9, 0.4])
    every = DocumentStopping(patience=5)
    every.targets = targets
    trainer = _Trainer()
    trainer.global_step = 1
    assert every.check(trainer, {0: -2.0, 1: -1.95}) and every.stopped_step == 1
    diverged = DocumentStopping(patience=5)
    diverged.targets = targets
    assert diverged.check(trainer, {0: -math.inf, 1: -2.0})
    with pytest.raises(ValueError, match="patience must be an integer >= 1"):
        DocumentStopping(patience=0)


def test_the_mask_drops_the_rows_of_documents_at_their_target():
    mask = DocumentMask()
    batch = {
        "input_ids": torch.arange(12).view(3, 4),
        "labels": torch.arange(12).view(3, 4),
        "doc_index": torch.tensor([4, 7, 4]),
        "split": "forget",
    }
    assert mask.apply(batch) is batch
    mask.reached = {4}
    kept = mask.apply(batch)
    assert kept["doc_index"].tolist() == [7] and kept["input_ids"].tolist() == [[4, 5, 6, 7]]
    assert kept["split"] == "forget"
    mask.reached = {4, 7}
    assert mask.apply(batch) is None
    with pytest.raises(ValueError, match="needs the forget batches' 'doc_index'"):
        mask.apply({"input_ids": batch["input_ids"]})


# ------------------------------------------------------------------ the path, on a tiny model
def _trainer(workflow, max_steps=12):
    return cpu_trainer(
        max_steps=max_steps,
        val_check_interval=1,
        check_val_every_n_epoch=None,
        callbacks=[workflow],
    )


def test_document_target_matching_moves_documents_into_their_bands(
    trained_tiny_model_dir, tiny_model_dir, tiny_datamodule_kwargs
):
    """The memorised tiny model, targets from the untrained tiny model (it never saw the forget
    set): the forget documents move towards their targets, more of them end inside their band
    than before, the report carries each document's target beside its value."""
    L.seed_everything(0)
    module = DocumentTargetMatching(
        str(trained_tiny_model_dir), learning_rate=3e-3, warmup_ratio=0.0, scheduler="constant"
    )
    data = UnlearningDataModule(**tiny_datamodule_kwargs, batch_size=4)
    workflow = UnlearningWorkflow(
        metrics=[Perplexity()],
        documents=DocumentTargeting(reference=str(tiny_model_dir), patience=3),
        verbose=False,
    )
    report = workflow.run(_trainer(workflow), module, data, export=False)
    targets = workflow.training.documents.targets
    assert targets.kind == "reference" and targets.tolerance > 0
    before = document_loglik(workflow.before.documents["forget"])
    after = document_loglik(workflow.after.documents["forget"])
    gap_before = np.mean([abs(v - targets.target[d]) for d, v in before.items()])
    gap_after = np.mean([abs(v - targets.target[d]) for d, v in after.items()])
    assert gap_after < 0.7 * gap_before
    within_before = sum(targets.within(before).values())
    assert sum(targets.within(after).values()) > within_before
    assert report["document_targets"]["kind"] == "reference"
    column = report["documents"]["targets"]["forget"]
    assert sorted(column["doc_index"]) == sorted(before)
    assert column["target ppl"][0] == pytest.approx(
        math.exp(-targets.target[column["doc_index"][0]])
    )
    assert all("within" in c for c in workflow.checks)
    assert workflow.stop.stopped_step is None or workflow.stop.stopped_step <= 12


def test_the_mask_stops_pushing_documents_at_their_target(
    trained_tiny_model_dir, tiny_datamodule_kwargs
):
    """GA+GD with the mask (quantile targets): once a document reached its target its rows leave
    the forget term; a document reached at the first check is never pushed again."""
    L.seed_everything(0)
    module = GradientAscentDescent(
        str(trained_tiny_model_dir), learning_rate=2e-3, warmup_ratio=0.0, scheduler="constant"
    )
    data = UnlearningDataModule(**tiny_datamodule_kwargs, batch_size=4)
    workflow = UnlearningWorkflow(
        metrics=[Perplexity()], documents=DocumentTargeting(mask=True), verbose=False
    )
    seen = []
    original = DocumentMask.apply

    def spy(self, batch):
        out = original(self, batch)
        seen.append((set(self.reached), batch["doc_index"].tolist(), out))
        return out

    DocumentMask.apply = spy
    try:
        workflow.run(_trainer(workflow, max_steps=8), module, data, export=False)
    finally:
        DocumentMask.apply = original
    assert workflow.training.documents.targets.kind == "quantiles"
    assert module.forget_mask is workflow.training.documents.mask
    assert any(reached for reached, _, _ in seen), "no document reached its target"
    for reached, docs, out in seen:
        kept = [] if out is None else out["doc_index"].tolist()
        assert kept == [d for d in docs if d not in reached]


def test_bad_target_options_are_named():
    with pytest.raises(ValueError, match="patience must be an integer >= 1"):
        DocumentTargeting(patience=0)
    module = DocumentTargetMatching("unused")
    with pytest.raises(RuntimeError, match="needs each forget document's target"):
        module.forget_loss({"input_ids": torch.zeros(1, 2, dtype=torch.long)})
