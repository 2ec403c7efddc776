"""What every built-in method promises, one table over :data:`lightning_unlearn.methods.METHODS`.

Each method constructs from its preset under ``configs/methods/``, rejects an unknown option and
a bad hyper-parameter by name, steps on a tiny model, and raises the forget set's likelihood of
a tiny model that memorised it. A new built-in method needs its row in :data:`ROWS` (a test
fails until it has one). What is particular to a method (its formula, its targets, its state)
is in ``test_methods_math.py`` and ``test_methods_behaviour.py``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as Lg
import pytest
import torch
import yaml

from lightning_unlearn.methods import METHODS, UnlearningModule
from lightning_unlearn.testing import build_method as build
from lightning_unlearn.testing import fit_on_batches as fit
from lightning_unlearn.testing import forget_nll as nll

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "methods"
#: optimizer steps of the shared run (constant learning rate, one fixed forget and retain batch)
STEPS = 5
#: PDU's duals for the tiny model: its retain NLL (~0.05) starts above this bound, lambda grows
PDU_KWARGS = {"retain_bound": 0.0, "dual_init": 0.5, "dual_lr": 0.25}


@dataclass(frozen=True)
class Row:
    """A method's row of the table.

    Attributes:
        floor: the forget NLL must rise by more than this over :data:`STEPS` steps (nats).
        kwargs: constructor options for the tiny model's run (cheap settings, small layers).
        required: what the class cannot be constructed without (also under ``kwargs``).
        bad: ``(options, message)``: each is refused with a ``ValueError`` matching ``message``.
        learning_rate: of the run.
        targets: each forget document's target one nat below its log-likelihood before (the
            batch's rows as documents, a tolerance of 0.05): for methods with per-document
            targets, which the workflow sets otherwise.
    """

    floor: float
    kwargs: dict[str, Any] = field(default_factory=dict)
    required: dict[str, Any] = field(default_factory=dict)
    bad: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    learning_rate: float = 3e-3
    targets: bool = False


def document_targets(module: UnlearningModule, forget: dict) -> dict:
    """The forget batch with ``doc_index`` (its rows), each document's target one nat below its
    mean token log-likelihood now (tolerance 0.05) given to the module."""
    from lightning_unlearn.evaluation.targets import DocumentTargets
    from lightning_unlearn.losses import sequence_nll

    forget = {**forget, "doc_index": torch.arange(forget["input_ids"].size(0))}
    with torch.no_grad():
        value = -sequence_nll(module(forget), forget["labels"])
    target = {i: float(v) - 1.0 for i, v in enumerate(value)}
    module.document_targets = DocumentTargets(target=target, tolerance=0.05, kind="reference")
    return forget


ROWS: dict[str, Row] = {
    "ga": Row(
        floor=0.5,
        bad=[({"forget_weight": -1.0}, "forget_weight must be >= 0")],
    ),
    "ga_gd": Row(
        floor=0.5,
        bad=[
            ({"learning_rate": 0.0}, "learning_rate must be > 0"),
            ({"retain_weight": -1.0}, "retain_weight must be >= 0"),
            ({"scheduler": "linear"}, "scheduler must be"),
            ({"warmup_ratio": 1.5}, "warmup_ratio"),
        ],
    ),
    "ga_kl": Row(
        floor=0.5,
        bad=[({"weight_decay": -1.0}, "weight_decay must be >= 0")],
    ),
    "rl": Row(
        floor=0.0,
        kwargs={"target": "uniform"},
        bad=[({"target": "gaussian"}, "target must be 'uniform' or 'random_model'")],
    ),
    "as": Row(
        floor=0.0,
        bad=[({"learning_rate": -1.0}, "learning_rate must be > 0")],
    ),
    "npo": Row(
        floor=0.5,
        bad=[({"beta": 0.0}, "beta must be > 0")],
    ),
    "simnpo": Row(
        floor=0.5,
        bad=[({"beta": -1.0}, "beta must be > 0")],
    ),
    "rmu": Row(
        floor=0.5,
        kwargs={"layer": 1, "steering_coefficient": 20.0, "retain_weight": 1.0},
        learning_rate=3e-2,
        bad=[({"steering_coefficient": 0.0}, "steering_coefficient")],
    ),
    "undial": Row(
        floor=0.5,
        kwargs={"strength": 10.0},
        bad=[({"strength": -1.0}, "strength must be >= 0")],
    ),
    "whp": Row(
        floor=0.3,
        kwargs={"reinforce_steps": 10, "reinforce_lr": 1e-2},
        bad=[
            ({"target": "argmax"}, "target must be 'hard' or 'soft'"),
            ({"reinforce_steps": 0}, "reinforce_steps must be >= 1"),
        ],
    ),
    "dpo": Row(
        floor=0.3,
        kwargs={"prompt_tokens": 4},
        bad=[
            ({"alternative": "idk"}, "alternative must be"),
            ({"prompt_tokens": 0}, "prompt_tokens must be >= 1"),
        ],
    ),
    "wga": Row(
        floor=0.5,
        bad=[
            ({"beta": -1}, "beta must be >= 0, got -1"),
            ({"beta": float("nan")}, "beta must be >= 0, got nan"),
        ],
    ),
    # the importance weight (1 - p)^beta2 on a memorised token (1 - p ~ 0.004) is ~0.6 at the
    # default beta2 = 0.1, so the other methods' step suffices (at beta2 = 1 it was ~0.004)
    "satimp": Row(
        floor=0.5,
        bad=[
            ({"beta1": -1.0}, "beta1 must be >= 0, got -1"),
            ({"beta2": -2}, "beta2 must be >= 0, got -2"),
        ],
    ),
    "ce_u": Row(
        floor=0.5,
        bad=[
            ({"skip_first": -1}, "skip_first must be an integer >= 0, got -1"),
            ({"skip_first": 1.5}, "skip_first must be an integer >= 0, got 1.5"),
        ],
    ),
    "pdu": Row(
        floor=0.5,
        kwargs=PDU_KWARGS,
        required={"retain_bound": 1.0},
        bad=[
            ({"retain_bound": -1}, "retain_bound must be >= 0, got -1"),
            ({"dual_lr": -0.5}, "dual_lr must be >= 0, got -0.5"),
            ({"dual_init": -1.0}, "dual_init must be >= 0, got -1"),
            ({"dual_update": "batch"}, "dual_update must be 'step' or 'epoch'"),
            ({"dual_warmup_epochs": -1}, "dual_warmup_epochs must be an int"),
            ({"retain_term": "none"}, "retain_term must be 'nll' or 'kl'"),
            ({"retain_weight": 2.0}, "set dual_init.*instead of retain_weight"),
        ],
    ),
    "dtm": Row(
        floor=0.5,
        targets=True,
        bad=[({"retain_weight": -1.0}, "retain_weight must be >= 0")],
    ),
}

NAMES = list(METHODS)
BAD = [(name, kwargs, message) for name in NAMES for kwargs, message in ROWS[name].bad]


@dataclass
class Run:
    """One method's shared run: ``initial`` is a copy of ``module`` taken before it trained."""

    module: UnlearningModule
    initial: UnlearningModule
    trainer: Lg.Trainer
    nll_before: float
    nll_after: float


def unlearn(name: str, model_dir: Path, forget: dict, retain: dict) -> Run:
    """Train method ``name`` with its row's options for :data:`STEPS` steps on the two batches."""
    row = ROWS[name]
    module = build(
        METHODS[name], model_dir, learning_rate=row.learning_rate, **{**row.required, **row.kwargs}
    )
    if row.targets:
        forget = document_targets(module, forget)
    initial = copy.deepcopy(module)
    before = nll(module, forget)
    trainer = fit(module, forget, retain, STEPS)
    return Run(module, initial, trainer, before, nll(module, forget))


def preset(cls: type) -> dict[str, Any]:
    """The ``init_args`` of the one preset under ``configs/methods/`` whose class is ``cls``."""
    found = []
    for path in sorted(CONFIGS.glob("*.yaml")):
        model = yaml.safe_load(path.read_text())["model"]
        if model["class_path"] in (
            f"lightning_unlearn.{cls.__name__}",
            f"{cls.__module__}.{cls.__name__}",
        ):
            found.append((path, model.get("init_args") or {}))
    assert len(found) == 1, f"{cls.__name__}: presets {[str(p) for p, _ in found]}, want one"
    return found[0][1]


# ----------------------------------------------------------------------------- the table
def test_every_method_has_a_row():
    assert list(ROWS) == NAMES, "a built-in method needs its row in ROWS (and ROWS no others)"
    assert all(ROWS[name].bad for name in NAMES)


# ----------------------------------------------------------------------------- construction
@pytest.mark.parametrize("name", NAMES)
def test_constructs_from_its_config(name, tiny_model_dir):
    cls = METHODS[name]
    init_args = preset(cls)
    module = cls(str(tiny_model_dir), **init_args)
    for key, value in init_args.items():
        assert module.hparams[key] == value, (name, key)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_option_is_named(name, tiny_model_dir):
    with pytest.raises(TypeError, match="forget_wieght"):
        METHODS[name](str(tiny_model_dir), **ROWS[name].required, forget_wieght=1.0)


@pytest.mark.parametrize(
    "name, kwargs, message", BAD, ids=[f"{n}-{'-'.join(k)}" for n, k, _ in BAD]
)
def test_bad_hyper_parameter_is_named(name, kwargs, message, tiny_model_dir):
    with pytest.raises(ValueError, match=message):
        METHODS[name](str(tiny_model_dir), **{**ROWS[name].required, **kwargs})


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("name", NAMES)
def test_steps_and_moves_only_trainable_weights(name, unlearned):
    run = unlearned(name)
    assert run.trainer.global_step == STEPS
    assert math.isfinite(float(run.trainer.callback_metrics["train/loss"]))
    after = dict(run.module.named_parameters())
    moved = 0
    # the initial copy's parameters (WHP's reinforced model is built at fit start: not among them)
    for param_name, p0 in run.initial.named_parameters():
        p = after[param_name]
        same = torch.equal(p, p0)
        assert same or p.requires_grad, f"{name}: frozen {param_name} changed"
        moved += not same
    assert moved > 0, f"{name}: no weight moved in {STEPS} steps"


@pytest.mark.parametrize("name", NAMES)
def test_reduces_forget_likelihood(name, unlearned):
    run = unlearned(name)
    floor = ROWS[name].floor
    assert run.nll_after > run.nll_before + floor, (name, run.nll_before, run.nll_after)
