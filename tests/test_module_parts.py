"""The base module's collaborators, each on its own: the number check, the guards, the schedule,
the sequential backward's order, the architectures declared for the hidden-state KL, the builder;
and the size each class of the methods package is held to."""

from __future__ import annotations

import ast
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import lightning_unlearn
from lightning_unlearn import GradientAscent, GradientAscentKL
from lightning_unlearn.methods.guards import (
    DivergenceError,
    ForgetNLLGuard,
    batch_part,
    check_finite,
    check_gradients,
    check_targets,
)
from lightning_unlearn.methods.lr_schedule import check_schedule, lr_factor
from lightning_unlearn.methods.output_heads import LINEAR_HEADS, declared_head, linear_heads
from lightning_unlearn.methods.sequential_backward import SequentialBackward
from lightning_unlearn.testing import build_method
from lightning_unlearn.validation import check_number

METHODS = Path(lightning_unlearn.__file__).resolve().parent / "methods"


# ------------------------------------------------------------------ sizes
def test_no_class_of_the_methods_package_passes_300_lines():
    sizes = {}
    for path in sorted(METHODS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                sizes[f"{path.name}:{node.name}"] = node.end_lineno - node.lineno + 1
    assert sizes["base.py:UnlearningModule"] < 300
    assert max(sizes.values()) <= 300, sizes


# ------------------------------------------------------------------ the number check
@pytest.mark.parametrize(
    ("value", "options", "message"),
    [
        (-1, {"low": 0.0, "strict": True}, "x must be > 0, got -1"),
        (0.0, {"low": 0.0, "strict": True}, "x must be > 0, got 0"),
        (-1.5, {"low": 0.0}, "x must be >= 0, got -1.5"),
        (float("nan"), {"low": 0.0}, "x must be >= 0, got nan"),
        ("3", {"low": 0.0}, "x must be >= 0, got '3'"),
        (1.0, {"low": 0.0, "high": 1.0}, r"x must be in \[0, 1\), got 1"),
        (0, {"low": 0.0, "high": 1.0, "strict": True}, r"x must be in \(0, 1\), got 0"),
        (0, {"low": 1, "integer": True}, "x must be an integer >= 1, got 0"),
        (2.0, {"low": 1, "integer": True}, "x must be an integer >= 1, got 2.0"),
        (True, {"low": 1, "integer": True}, "x must be an integer >= 1, got True"),
        (0, {"low": 1, "integer": True, "optional": True}, ">= 1 or None, got 0"),
        (-1, {"low": 0, "hint": "pass a count"}, "x must be >= 0, got -1; pass a count"),
    ],
)
def test_check_number_names_the_input_the_range_and_the_value(value, options, message):
    with pytest.raises(ValueError, match=message):
        check_number("x", value, **options)


def test_check_number_lets_good_values_through():
    check_number("x", 0.0, low=0.0)
    check_number("x", 1e-9, low=0.0, strict=True)
    check_number("x", 0.999, low=0.0, high=1.0)
    check_number("x", 3, low=1, integer=True)
    check_number("x", None, low=1, optional=True)


def test_the_module_reports_bad_hyper_parameters_through_its_collaborators():
    for kwargs, message in [
        ({"warmup_ratio": 1.0}, r"warmup_ratio must be in \[0, 1\), got 1"),
        ({"scheduler": "linear"}, "scheduler must be 'cosine' or 'constant'"),
        ({"max_forget_nll": 0.0}, "max_forget_nll must be > 0 or None, got 0"),
        ({"backward": "both"}, "backward must be 'joint', 'sequential' or None"),
        ({"weight_decay": -1}, "weight_decay must be >= 0, got -1"),
    ]:
        with pytest.raises(ValueError, match=message):
            GradientAscent("unused", **kwargs)


# ------------------------------------------------------------------ guards
def test_batch_part_names_what_is_missing():
    labels = torch.tensor([[1, 2, 3]])
    part = {"input_ids": labels, "labels": labels}
    assert batch_part({"forget": part}, "forget", "GA") is part
    with pytest.raises(ValueError, match="training batch has no 'forget' part"):
        batch_part({"retain": part}, "forget", "GA")
    with pytest.raises(ValueError, match="GA\\+GD needs retain data"):
        batch_part({"forget": part}, "retain", "GA+GD")
    with pytest.raises(ValueError, match="retain batch has no real target tokens"):
        check_targets({"labels": torch.tensor([[5, -100, -100]])}, "retain")


def test_non_finite_loss_and_gradient_stop_naming_the_step_and_the_parameter():
    check_finite(torch.tensor(1.0), 3)
    with pytest.raises(DivergenceError, match=r"non-finite training loss \(nan\) at step 3"):
        check_finite(torch.tensor(float("nan")), 3)
    layer = nn.Linear(2, 2)
    layer.weight.grad = torch.zeros(2, 2)
    layer.bias.grad = torch.tensor([0.0, float("inf")])
    with pytest.raises(DivergenceError, match="non-finite gradient in 'bias' at step 7"):
        check_gradients(layer.named_parameters(), 7)
    layer.bias.grad = torch.zeros(2)
    check_gradients(layer.named_parameters(), 7)


def test_forget_nll_guard_reuses_the_step_s_logits_and_checks_the_bound():
    calls = []

    class Model(nn.Module):
        def forward(self, input_ids, use_cache=False):
            calls.append(1)
            return SimpleNamespace(logits=torch.zeros(*input_ids.shape, 4))

    batch = {"input_ids": torch.zeros(1, 3, dtype=torch.long), "labels": torch.ones(1, 3).long()}
    uniform = math.log(4)
    guard = ForgetNLLGuard(uniform + 0.01)
    with guard.watching(batch):
        guard.offer(dict(batch), torch.full((1, 3, 4), 9.0))  # another batch: not kept
        guard.offer(batch, torch.zeros(1, 3, 4))
        guard.check(Model(), batch, 1)
    assert calls == []  # the offered logits were used
    with guard.watching(batch):  # nothing offered: one more forward pass
        guard.check(Model(), batch, 1)
    assert calls == [1]
    strict = ForgetNLLGuard(1.0)
    above = pytest.raises(DivergenceError, match=r"forget NLL 1\.3863 at step 2 is above")
    with above, strict.watching(batch):
        strict.check(Model(), batch, 2)
    ForgetNLLGuard(None).check(None, batch, 2)  # no bound: nothing runs


# ------------------------------------------------------------------ the schedule
def test_schedule_warms_up_from_the_first_step_and_stays_at_zero_past_the_end():
    factor = lr_factor(2, 6, "cosine")
    assert [factor(s) for s in range(2)] == [0.5, 1.0]
    assert factor(2) == 1.0 and factor(6) == 0.0 and factor(9) == 0.0
    assert lr_factor(2, 6, "constant")(5) == 1.0
    with pytest.raises(ValueError, match="scheduler must be"):
        check_schedule(0.0, "linear")


def test_schedule_is_transformers_cosine_without_warmup_and_differs_with_one():
    """Why ours is kept: without warm-up it is transformers' value at every step (the demo's
    runs); with one, theirs takes its first step at factor 0."""
    from transformers import get_cosine_schedule_with_warmup

    def theirs(warmup: int, total: int) -> list[float]:
        optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, total)
        return [scheduler.lr_lambdas[0](s) for s in range(total)]

    assert [lr_factor(0, 10, "cosine")(s) for s in range(10)] == theirs(0, 10)
    assert theirs(2, 10)[0] == 0.0 and lr_factor(2, 10, "cosine")(0) == 0.5


# ------------------------------------------------------------------ the backward order
def test_backward_order_is_sequential_except_under_deepspeed_and_fsdp():
    def under(name: str):
        return SimpleNamespace(strategy=type(name, (), {})())

    assert SequentialBackward(None).mode(None) == "sequential"
    assert SequentialBackward(None).mode(under("DDPStrategy")) == "sequential"
    assert SequentialBackward(None).mode(under("HFDeepSpeedStrategy")) == "joint"
    assert SequentialBackward(None).mode(under("FSDPStrategy")) == "joint"
    assert SequentialBackward("sequential").mode(under("FSDPStrategy")) == "sequential"
    steps = SequentialBackward(None)
    steps._zeroed_early = (0, 4)
    assert not steps.skip_zero_grad(0, 3)
    assert steps.skip_zero_grad(0, 4) and not steps.skip_zero_grad(0, 4)  # once


# ------------------------------------------------------------------ declared output heads
_SMALL = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    vocab_size=128,
    n_embd=32,
    n_layer=2,
    n_head=4,
    num_local_experts=4,
    num_experts=4,
    num_experts_per_tok=2,
    moe_intermediate_size=16,
    shared_expert_intermediate_size=16,
    pad_token_id=0,
    bos_token_id=0,
    eos_token_id=0,
)


def _tiny(model_type: str) -> nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **_SMALL)).eval()


@pytest.mark.parametrize("model_type", sorted(LINEAR_HEADS))
def test_each_declared_architecture_makes_its_logits_with_the_declared_layers(model_type):
    """The declaration checked against the architecture: ``hidden_states[-1]`` is the declared
    final norm's output and the logits are the declared head applied to it, nothing after."""
    model = _tiny(model_type)
    layout = LINEAR_HEADS[model_type]
    normed = {}
    hook = model.get_submodule(layout.norm).register_forward_hook(
        lambda module, args, out: normed.setdefault("out", out)
    )
    ids = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
        last = model(input_ids=ids, use_cache=False, logits_to_keep=1).logits
    hook.remove()
    assert declared_head(model) is model.get_submodule(layout.head)
    torch.testing.assert_close(normed["out"], out.hidden_states[-1], rtol=0, atol=0)
    torch.testing.assert_close(model.get_submodule(layout.head)(out.hidden_states[-1]), out.logits)
    torch.testing.assert_close(last, out.logits[:, -1:])


def test_other_architectures_and_wrapped_heads_take_the_logits_path():
    gemma2 = _tiny("gemma2")  # soft-caps its logits: not declared
    assert "gemma2" not in LINEAR_HEADS and declared_head(gemma2) is None
    llama = _tiny("llama")
    assert linear_heads(llama, gemma2) is None  # both models must qualify
    assert linear_heads(llama, None) == (llama.lm_head, llama.lm_head)

    class RemoteLlama(type(llama)):  # remote code of a declared type is not trusted
        pass

    assert declared_head(RemoteLlama(llama.config)) is None
    llama.lm_head = nn.Sequential(llama.lm_head)  # an adapter around the head
    assert declared_head(llama) is None


def test_undeclared_architecture_kl_equals_the_fast_path(tiny_model_dir, retain_batch, monkeypatch):
    """The fallback gives the value of the declared path (GA+KL's retain term) on one model."""
    module = build_method(GradientAscentKL, tiny_model_dir)
    fast = module.retain_loss(retain_batch)
    monkeypatch.delitem(LINEAR_HEADS, "llama")
    assert module._output_layers() is None
    torch.testing.assert_close(module.retain_loss(retain_batch), fast, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------ the builder
def test_the_module_keeps_its_argument_names_over_the_builder(tiny_model_dir):
    path = str(tiny_model_dir)
    module = GradientAscent(
        path, tokenizer=path, dtype="float32", lora={"r": 4}, max_forget_nll=9.0
    )
    assert module.model_name_or_path == str(tiny_model_dir) == module.builder.model_name_or_path
    assert module.tokenizer_name_or_path == str(tiny_model_dir)
    assert (module.dtype_name, module.gguf_file, module.trust_remote_code) == (
        "float32",
        None,
        False,
    )
    assert module.lora.r == 4 and module.max_forget_nll == 9.0
    assert module.reference_model_name_or_path is None and module.gradient_checkpointing is False
    assert len(module.builder.load_tokenizer()) > 0
