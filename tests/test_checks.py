"""The adaptive check schedule: a full check only when a prediction from the checks so far says
the target may be reached (by hand, and on a measured curve), and through a real fit: the same
stop step as checking after every step, with fewer checks."""

from __future__ import annotations

import math

import lightning as L
import pytest

from lightning_unlearn import GradientAscent
from lightning_unlearn.data import UnlearningDataModule
from lightning_unlearn.evaluation import Perplexity
from lightning_unlearn.evaluation.schedule import AdaptiveChecks
from lightning_unlearn.workflow import UnlearningWorkflow


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
    assert [d["step"] for d in schedule.decisions if d["due"]] == [1, 5, 6]


def test_the_safety_net_re_measures_the_rate():
    """A split that does not rise is checked only every 4th step; a slow convex rise (the
    measured slow demo run, log-ppl after each step) checked after steps 1, 10 and 15 with
    every = 10 stops where a check after every step stops."""
    flat = AdaptiveChecks(every=4)
    flat.start(threshold_ppl=math.exp(1.5), before_ppl=math.exp(1.0))
    flat.record_check(1, math.exp(0.95))
    assert [flat.due(t) for t in (2, 3, 4, 5)] == [False, False, True, False]
    curve = [1.7085, 1.7272, 1.7478, 1.7719, 1.7966, 1.82, 1.8448, 1.8713, 1.8987, 1.9269,
             1.9563, 1.9877, 2.0201, 2.0543, 2.0914, 2.1311]  # fmt: skip
    threshold = math.exp(2.12688)
    schedule = AdaptiveChecks(every=10)
    schedule.start(threshold_ppl=threshold, before_ppl=math.exp(curve[0]))
    checked = []
    for step in range(1, len(curve)):
        if schedule.due(step):
            checked.append(step)
            schedule.record_check(step, math.exp(curve[step]))
            if math.exp(curve[step]) >= threshold:
                break
    assert checked == [1, 10, 15]
    assert min(i for i, v in enumerate(curve) if math.exp(v) >= threshold) == 15


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="every must be a positive integer"):
        AdaptiveChecks(every=0)
    with pytest.raises(ValueError, match="growth must be >= 1"):
        AdaptiveChecks(growth=0.5)
    with pytest.raises(ValueError, match="threshold must be a positive perplexity"):
        AdaptiveChecks().start(threshold_ppl=0.0)
    with pytest.raises(ValueError, match="checks must be 'adaptive' or 'fixed'"):
        UnlearningWorkflow(checks="sometimes")
    with pytest.raises(RuntimeError, match="before start"):
        AdaptiveChecks().due(1)


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
