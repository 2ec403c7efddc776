"""The memory planner: parameter counts, DeepSpeed's own estimators, presets, CLI output."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoConfig, AutoModelForCausalLM

from lightning_unlearn import planner
from lightning_unlearn.planner import (
    GIB,
    METHODS,
    PRESETS,
    MethodNeeds,
    layout_from_yaml,
    load_model_config,
    method_needs,
    model_size,
    plan_memory,
    strategy_layout,
)

TRAINER_PRESETS = Path(__file__).resolve().parents[1] / "configs" / "trainer"
STATES = ("weights", "gradients", "optimizer states", "gathered layer buffer")


@pytest.fixture(scope="module")
def llama7b():
    return model_size(load_model_config("llama-7b"))


def states(plan):
    return sum(plan.gpu.get(k, 0) for k in STATES)


def test_counts_match_the_real_model(tiny_model_dir):
    from deepspeed.runtime.zero.stage3 import model_to_params

    size = model_size(AutoConfig.from_pretrained(tiny_model_dir), lora_rank=4)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert (size.total, size.largest_layer) == model_to_params(model)
    assert size.total == sum(p.numel() for p in model.parameters())

    from lightning_unlearn.models import LoraSettings, apply_lora

    lora = apply_lora(model, LoraSettings(r=4))
    assert size.lora == sum(p.numel() for p in lora.parameters() if p.requires_grad)


def test_llama_7b_parameter_count(llama7b):
    # Llama-2-7B has 6,738,415,616 parameters
    assert llama7b.total == 6_738_415_616
    assert llama7b.largest_layer == 32000 * 4096  # the embedding (and lm_head) matrix


@pytest.mark.parametrize("gpus,nodes", [(8, 1), (4, 2)])
def test_zero2_matches_deepspeed_estimator_exactly(llama7b, gpus, nodes):
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    plan = plan_memory(
        llama7b,
        method=method_needs("ga"),
        layout=PRESETS["deepspeed_zero2"],
        gpus=gpus,
        nodes=nodes,
    )
    _, ds_gpu = estimate_zero2_model_states_mem_needs(llama7b.total, gpus, nodes, cpu_offload=False)
    assert states(plan) == pytest.approx(ds_gpu, rel=1e-6)


@pytest.mark.parametrize("gpus,nodes", [(8, 1), (8, 2), (2, 1)])
def test_zero3_within_12_percent_above_deepspeed_estimator(llama7b, gpus, nodes):
    """We count bf16 gradients (2 B) on top of DeepSpeed's 18 B: 20/18 = +11% at most."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    plan = plan_memory(
        llama7b,
        method=method_needs("ga"),
        layout=PRESETS["deepspeed_zero3"],
        gpus=gpus,
        nodes=nodes,
    )
    _, ds_gpu, _ = estimate_zero3_model_states_mem_needs(
        llama7b.total,
        llama7b.largest_layer,
        gpus,
        nodes,
        cpu_offload=False,
        cpu_offload_params=False,
    )
    assert 1.0 <= states(plan) / ds_gpu <= 1.12


@pytest.mark.parametrize("offload_params", [False, True])
def test_zero3_offload_matches_deepspeed_estimator(llama7b, offload_params):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    name = "deepspeed_zero3_offload_params" if offload_params else "deepspeed_zero3_offload"
    plan = plan_memory(llama7b, method=method_needs("ga"), layout=PRESETS[name], gpus=8, nodes=2)
    ds_cpu, ds_gpu, _ = estimate_zero3_model_states_mem_needs(
        llama7b.total, llama7b.largest_layer, 8, 2, cpu_offload=True,
        cpu_offload_params=offload_params, zero_init=True, additional_buffer_factor=1.0,
    )  # fmt: skip
    offloaded = sum(v for k, v in plan.cpu.items() if "offloaded" in k)
    assert offloaded == pytest.approx(ds_cpu, rel=1e-6)
    if offload_params:
        assert states(plan) == ds_gpu  # only the gathered layer stays on the GPU
    else:
        assert 1.0 <= states(plan) / ds_gpu <= 2.0  # + bf16 gradients, which DeepSpeed leaves out
    # the command line shows DeepSpeed's figure next to ours
    assert planner.deepspeed_estimate(llama7b, PRESETS[name], gpus=8, nodes=2)[0] == ds_cpu


def test_reference_model_cost_per_case(llama7b):
    zero3, ddp = PRESETS["deepspeed_zero3"], PRESETS["ddp"]
    ga, ga_kl = method_needs("ga"), method_needs("ga_kl")
    # ZeRO-3: a second copy, sharded like the model (bf16 weights / 8 GPUs)
    plan = plan_memory(llama7b, method=ga_kl, layout=zero3, gpus=8)
    assert plan.gpu["reference model"] == pytest.approx(2 * llama7b.total / 8, abs=1)
    # DDP: a full fp32 copy on every GPU
    assert (
        plan_memory(llama7b, method=ga_kl, layout=ddp, gpus=8).gpu["reference model"]
        == 4 * llama7b.total
    )
    # LoRA: adapters disabled, no copy at all; methods without reference: none either
    lora = model_size(load_model_config("llama-7b"), lora_rank=8)
    assert (
        plan_memory(lora, method=ga_kl, layout=zero3, gpus=8, lora=True).gpu["reference model"] == 0
    )
    assert plan_memory(llama7b, method=ga, layout=zero3, gpus=8).gpu["reference model"] == 0
    # LoRA trains ~20M parameters: optimizer states shrink accordingly
    assert lora.lora == 32 * 8 * (4 * (4096 + 4096) + 3 * (4096 + 11008))
    lora_plan = plan_memory(lora, method=ga_kl, layout=PRESETS["single_gpu"], lora=True)
    assert lora_plan.gpu["optimizer states"] == 8 * lora.lora


def test_activations_and_checkpointing(llama7b):
    kw = dict(method=method_needs("ga_gd"), layout=PRESETS["deepspeed_zero3"], gpus=8, seq_len=4096)
    full = plan_memory(llama7b, **kw)
    ckpt = plan_memory(llama7b, gradient_checkpointing=True, **kw)
    per_layer = 20 * 4096 + 4 * 4096 + 8 * 11008
    # GA+GD keeps the forget and the retain graph: 2 x 4096 tokens x 32 layers
    assert full.gpu["activations"] == 2 * 4096 * 32 * per_layer
    assert ckpt.gpu["activations"] == 2 * 4096 * (32 * 2 * 4096 + per_layer)
    assert ckpt.gpu["activations"] < full.gpu["activations"] / 5
    # sharding divides the model states, not the activations
    more = plan_memory(llama7b, **{**kw, "gpus": 16})
    assert states(more) < states(full) and more.gpu["activations"] == full.gpu["activations"]


def test_presets_agree_with_the_yaml_files():
    for path in sorted(TRAINER_PRESETS.glob("*.yaml")):
        assert layout_from_yaml(path) == PRESETS[path.stem], path.name
        assert strategy_layout(str(path)) == PRESETS[path.stem]


def test_method_lookup_and_errors():
    assert method_needs("GradientAscentKL") == method_needs("ga_kl") == method_needs("GA+KL")
    assert method_needs("lightning_unlearn.methods.GradientAscentKL") == method_needs("ga_kl")
    with pytest.raises(ValueError, match="unknown --method 'gax'.*ga_kl"):
        method_needs("gax")
    with pytest.raises(ValueError, match="unknown --strategy 'zero9'.*deepspeed_zero3"):
        strategy_layout("zero9")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model_config(str(TRAINER_PRESETS))


def test_main_prints_table_and_verdict(capsys, tiny_model_dir):
    code = planner.main(["--model", "llama-7b", "--method", "ga_kl", "--strategy", "deepspeed_zero3",
                         "--gpus", "8", "--gradient-checkpointing"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "verdict: FITS" in out
    assert "reference model" in out and "DeepSpeed's estimator" in out and "6.74B parameters" in out

    code = planner.main(["--model", "llama-70b", "--method", "ga_kl", "--strategy", "single_gpu"])
    out = capsys.readouterr().out
    assert code == 1 and "verdict: DOES NOT FIT" in out

    # a local checkpoint directory works too; the tiny model fits a 3 GiB "GPU" (2 GiB runtime allowance)
    code = planner.main(["--model", str(tiny_model_dir), "--strategy", "cpu", "--gpu-memory", "3"])
    assert code == 0 and "FITS" in capsys.readouterr().out


def test_plan_totals(llama7b):
    plan = plan_memory(llama7b, method=method_needs("ga_kl"), layout=PRESETS["deepspeed_zero3_offload"], gpus=8,
                       cpu_memory_gib=64)  # fmt: skip
    assert plan.gpu_total == sum(plan.gpu.values()) and plan.gpu["optimizer states"] == 0
    # 16 B x 6.74B parameters of optimizer state in RAM = 100 GiB > 64 GiB
    assert plan.cpu["optimizer states (offloaded)"] / GIB == pytest.approx(
        16 * llama7b.total / GIB, rel=1e-6
    )
    assert not plan.fits


@pytest.mark.parametrize("short", sorted(METHODS))
@pytest.mark.parametrize("retain_term", [None, "none", "nll", "kl"])
def test_planner_and_classes_agree_for_every_method_and_retain_term(short, retain_term):
    """The plan holds retain activations and a reference copy exactly when a module of that class,
    so configured, trains on retain batches / loads a reference (read off a built instance)."""
    import lightning_unlearn

    cls = getattr(lightning_unlearn, METHODS[short])
    if short == "rmu" and retain_term not in (None, "none"):
        with pytest.raises(ValueError, match="RMU's retain term is its own"):
            method_needs(short, retain_term=retain_term)
        return
    if short == "pdu" and retain_term == "none":
        with pytest.raises(ValueError, match="constrains the retain loss"):
            method_needs(short, retain_term=retain_term)
        return
    kwargs = dict(planner.REQUIRED_OPTIONS.get(cls.__name__, {}))
    if retain_term is not None:
        kwargs["retain_term"] = retain_term
    module = cls("unused-path", **kwargs)
    needs = method_needs(short, retain_term=retain_term)
    assert (needs.uses_retain, needs.reference) == (module.uses_retain, module.needs_reference)
    expected_retain = {"nll": True, "kl": True, "none": False}.get(retain_term or "")
    if expected_retain is not None and short != "rmu":
        assert needs.uses_retain is expected_retain
        if retain_term == "kl":
            assert needs.reference
    llama = load_model_config("llama-7b")
    size = model_size(llama)
    kw = dict(layout=PRESETS["single_gpu"], gpus=1, seq_len=512, backward="joint")
    plan = plan_memory(size, method=needs, **kw)
    alone = plan_memory(size, method=MethodNeeds("x", False, False), **kw)
    assert (plan.gpu["activations"] > alone.gpu["activations"]) is needs.uses_retain
    assert (plan.gpu["reference model"] > 0) is needs.reference


def test_paper_defaults_of_the_retain_term():
    defaults = {k: method_needs(k) for k in METHODS}
    assert [k for k, n in defaults.items() if n.uses_retain] == [
        "ga_gd", "ga_kl", "simnpo", "rmu", "wga", "satimp", "pdu", "dtm"
    ]  # fmt: skip
    assert not defaults["simnpo"].reference and defaults["npo"].reference


def test_sequential_backward_holds_one_sequence_of_activations_at_a_time(llama7b):
    """Joint: the forget and the retain sequence's activations and logits are alive together;
    sequential: as for a method without a retain term. The default follows the library's."""
    kw = dict(layout=PRESETS["single_gpu"], gpus=1, seq_len=2048)
    ga = plan_memory(llama7b, method=method_needs("ga"), **kw)
    joint = plan_memory(llama7b, method=method_needs("ga_gd"), backward="joint", **kw)
    sequential = plan_memory(llama7b, method=method_needs("ga_gd"), backward="sequential", **kw)
    for part in ("activations", "logits"):
        assert joint.gpu[part] == 2 * ga.gpu[part]
        assert sequential.gpu[part] == ga.gpu[part]
    assert plan_memory(llama7b, method=method_needs("ga_gd"), **kw).gpu == sequential.gpu
    zero3 = dict(layout=PRESETS["deepspeed_zero3"], gpus=8, seq_len=2048)
    assert (plan_memory(llama7b, method=method_needs("ga_gd"), **zero3).gpu
            == plan_memory(llama7b, method=method_needs("ga_gd"), backward="joint", **zero3).gpu)  # fmt: skip
    with pytest.raises(ValueError, match="--backward must be 'joint' or 'sequential'"):
        plan_memory(llama7b, method=method_needs("ga"), backward="both", **kw)


def test_rmu_plan_counts_its_trained_modules_and_bf16_weights(tiny_model_dir):
    """RMU trains three MLP down-projections: gradients and AdamW states for those only, and in
    bf16 when the method loads the model in bf16 (docs/cluster.md's WMDP command)."""
    from lightning_unlearn import RepresentationMisdirection

    config = load_model_config("mistral-7b")
    size, method = model_size(config), method_needs("rmu")
    assert (method.trainable_layers, method.trainable_modules) == ((5, 6, 7), ("mlp.down_proj",))
    trainable = planner.trainable_parameters(config, method)
    assert trainable == 3 * 14336 * 4096
    assert planner.trainable_parameters(config, method_needs("ga_gd")) is None
    kw = dict(method=method, layout=PRESETS["single_gpu"], seq_len=512, micro_batch=4)
    plan = plan_memory(size, trainable=trainable, dtype="bf16", **kw)
    assert plan.gpu["weights"] == plan.gpu["reference model"] == 2 * size.total
    assert plan.gpu["gradients"] == 2 * trainable and plan.gpu["optimizer states"] == 4 * trainable
    full = plan_memory(size, **kw)  # every parameter trained, fp32: as before
    assert full.gpu["weights"] == 4 * size.total and full.gpu["optimizer states"] == 8 * size.total
    with pytest.raises(ValueError, match="--dtype must be"):
        plan_memory(size, dtype="fp16", **kw)
    # the count agrees with what a built RMU module trains (the tiny model: layers 0 and 1)
    module = RepresentationMisdirection(str(tiny_model_dir), layer=1)
    module.configure_model()
    tiny = MethodNeeds("RepresentationMisdirection", True, True, (0, 1), ("mlp.down_proj",))
    built = sum(p.numel() for p in module.model.parameters() if p.requires_grad)
    assert planner.trainable_parameters(AutoConfig.from_pretrained(tiny_model_dir), tiny) == built
    with pytest.raises(ValueError, match=r"trains decoder layers \[7\].*has 2"):
        planner.trainable_parameters(
            AutoConfig.from_pretrained(tiny_model_dir), MethodNeeds("R", True, True, (7,), ("mlp",))
        )
    argv = ["--model", "mistral-7b", "--method", "rmu", "--strategy", "single_gpu", "--seq-len",
            "512", "--micro-batch", "4", "--dtype", "bf16"]  # fmt: skip
    assert planner.main(argv) == 0  # fits on one 80 GiB GPU


def test_cluster_md_quotes_the_planner_for_the_wmdp_command(capsys):
    """docs/cluster.md's WMDP section shows the planner's output for its command, verbatim."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "cluster.md").read_text()
    prompt = "$ lightning-unlearn plan --model mistral-7b --method rmu"
    block = doc[doc.index(prompt) :].split("```", 1)[0]
    command, quoted = block.split("\n", 1)
    assert planner.main(command.split()[3:]) == 0
    assert capsys.readouterr().out.strip() == quoted.strip()
