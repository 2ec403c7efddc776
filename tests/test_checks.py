"""The adaptive check schedule: a full check only when the forget batches' own losses say the
target may be reached (a scripted loss sequence, by hand), and through a real fit: the same stop
step as checking after every step, with fewer checks."""

from __future__ import annotations

import math

import lightning as L
import pytest

from lightning_unlearn import GradientAscent
from lightning_unlearn.data import UnlearningDataModule
from lightning_unlearn.evaluation import Perplexity
from lightning_unlearn.evaluation.schedule import AdaptiveChecks, window_key
from lightning_unlearn.workflow import UnlearningWorkflow

KEYS = [window_key([i, i + 1]) for i in range(4)]
BASE = [1.0, 1.4, 0.6, 1.2]  # each window's mean NLL before unlearning
TOKENS = [10, 10, 10, 10]


def _sd(values):
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def test_the_checks_predict_the_crossing_and_close_in_on_it():
    """Before 1.0, threshold 1.5 (log-ppl). No check yet: one is due (the rate is unknown). A
    check after step 1 reads 1.08: the split may rise 1.5 x 0.08 a step, 1.08 + 0.12 (t - 1)
    reaches 1.5 at t = 4.5, so the next check follows step 5 and none before. It reads 1.45
    (rates 0.09 so far, 0.0925 since step 1): 1.45 + 1.5 x 0.0925 = 1.589, due after step 6."""
    schedule = AdaptiveChecks(every=100)
    schedule.start(threshold_ppl=math.exp(1.5), before_ppl=math.exp(1.0))
    assert schedule.predicted(1) == math.inf and schedule.due(1)
    schedule.record_check(1, math.exp(1.08))
    assert [schedule.due(t) for t in (2, 3, 4, 5)] == [False, False, False, True]
    assert schedule.predicted(4) == pytest.approx(1.08 + 0.12 * 3)
    schedule.record_check(5, math.exp(1.45))
    assert schedule.predicted(6) == pytest.approx(1.45 + 1.5 * 0.0925)
    assert schedule.due(6)
    # a split that does not rise: predicted flat, only the safety net checks
    flat = AdaptiveChecks(every=4)
    flat.start(threshold_ppl=math.exp(1.5), before_ppl=math.exp(1.0))
    flat.record_check(1, math.exp(0.95))
    assert [flat.due(t) for t in (2, 3, 4, 5)] == [False, False, True, False]


def test_the_batch_bound_adds_a_check_once_it_reaches_the_target_and_not_before():
    """Paired windows whose NLL rises by 0.1 (+-0.01) a step; split before log-ppl 1.0,
    threshold log-ppl 1.5, a check at step 0 that says the split is flat (so only the batches
    decide). By hand: the estimate after step t is 1.0 + mean(change), the prediction adds the
    last rise, the bound adds 1.96 sd."""
    schedule = AdaptiveChecks(every=100)
    schedule.start(threshold_ppl=math.exp(1.5), before_ppl=math.exp(1.0),
                   baseline=dict(zip(KEYS, BASE)))  # fmt: skip
    schedule.record_check(0, math.exp(1.0))
    noise = [0.01, -0.01, 0.01, -0.01]
    decisions = []
    for step in range(1, 8):
        # the batch of step t was scored before its update: it saw t - 1 rises
        changes = [0.1 * (step - 1) + e for e in noise]
        nll = [(b + c) * n for b, c, n in zip(BASE, changes, TOKENS)]
        estimate = schedule.observe(step, KEYS, nll, TOKENS)
        assert estimate.paired
        assert estimate.value == pytest.approx(1.0 + 0.1 * (step - 1))
        se = _sd(changes) / 2  # four windows of equal weight
        assert estimate.se == pytest.approx(se)
        bound = estimate.value + 1.96 * se if step == 1 else (
            estimate.value + 0.1 + 1.96 * math.sqrt(3 * se**2))  # fmt: skip
        assert schedule.upper_bound() == pytest.approx(bound)
        decisions.append(schedule.due(step))
    # predicted after step t: 1.0 + 0.1 t; the bound (+0.034) first reaches 1.5 at t = 5
    assert decisions == [False, False, False, False, True, True, True]


def test_the_safety_net_and_too_little_evidence_check():
    schedule = AdaptiveChecks(every=3)
    schedule.start(threshold_ppl=math.exp(5.0), before_ppl=math.exp(1.0),
                   baseline=dict(zip(KEYS, BASE)))  # fmt: skip
    schedule.record_check(0, math.exp(1.0))
    due = []
    for step in range(1, 7):
        schedule.observe(step, KEYS, [b * n for b, n in zip(BASE, TOKENS)], TOKENS)
        due.append(schedule.due(step))
    assert due == [False, False, True, False, False, True]  # far from the target: every 3rd
    schedule.observe(7, KEYS[:1], [BASE[0] * 10], [10])  # one window: no spread
    assert schedule.upper_bound() == math.inf and schedule.due(7)


def test_unknown_windows_use_the_level_with_its_spread():
    schedule = AdaptiveChecks(every=100)
    schedule.start(threshold_ppl=math.exp(1.5), before_ppl=math.exp(1.0), baseline={})
    schedule.record_check(0, math.exp(1.0))
    levels = [1.0, 1.4, 0.6, 1.2]
    estimate = schedule.observe(1, KEYS, [v * 10 for v in levels], TOKENS)
    assert not estimate.paired
    assert estimate.value == pytest.approx(1.05)
    assert estimate.se == pytest.approx(_sd(levels) / 2)
    # 1.05 + 1.96 * 0.144 = 1.33 < 1.5: not due; the same levels twice as spread out: due
    assert not schedule.due(1)
    wide = [1.05 + 2 * (v - 1.05) for v in levels]
    schedule.observe(2, KEYS, [v * 10 for v in wide], TOKENS)
    assert schedule.due(2)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="every must be a positive integer"):
        AdaptiveChecks(every=0)
    with pytest.raises(ValueError, match="growth must be >= 1"):
        AdaptiveChecks(growth=0.5)
    with pytest.raises(ValueError, match="threshold must be a positive perplexity"):
        AdaptiveChecks().start(threshold_ppl=0.0)
    with pytest.raises(ValueError, match="checks must be 'adaptive' or 'fixed'"):
        UnlearningWorkflow(checks="sometimes")


def _fit(checks, model_dir, data_kwargs):
    module = GradientAscent(str(model_dir), learning_rate=2e-3, warmup_ratio=0.0,
                            scheduler="constant")  # fmt: skip
    data = UnlearningDataModule(**data_kwargs, batch_size=4)
    workflow = UnlearningWorkflow(metrics=[Perplexity()], checks=checks, verbose=False)
    trainer = L.Trainer(
        max_steps=30, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        val_check_interval=1, check_val_every_n_epoch=None, callbacks=[workflow],
    )  # fmt: skip
    report = workflow.run(trainer, module, data, export=False)
    return report, workflow


def test_adaptive_checks_stop_where_checking_every_step_stops(
    trained_tiny_model_dir, tiny_datamodule_kwargs
):
    """GA on the memorised tiny model: checking after every step and the adaptive schedule stop
    on the same step with the same forget perplexity, the adaptive one after fewer checks."""
    every, fixed = _fit("fixed", trained_tiny_model_dir, tiny_datamodule_kwargs)
    adaptive, schedule = _fit("adaptive", trained_tiny_model_dir, tiny_datamodule_kwargs)
    assert every["stopped_step"] is not None and every["stopped_step"] >= 4
    assert adaptive["stopped_step"] == every["stopped_step"]
    assert adaptive["after"]["forget/ppl"] == pytest.approx(every["after"]["forget/ppl"])
    assert len(fixed.checks) == every["stopped_step"]
    assert 1 <= len(schedule.checks) < len(fixed.checks)
    assert adaptive["checks"]["schedule"] == "adaptive"
    assert adaptive["checks"]["count"] == len(schedule.checks)
    # every window of the tiny forget split is its document's only one: the estimates are paired
    assert all(e.paired for e in schedule.schedule.estimates)
