"""A real sharded run: DeepSpeed ZeRO-3 on two CPU processes (gloo) through ``Trainer.fit``.

GA+KL needs a frozen reference model; both it and the trained model are built in
``configure_model()`` inside ``deepspeed.zero.Init``, so the one engine partitions both (the
pattern that avoids Lightning issue 17319). The run must match a single-process run.
"""

from __future__ import annotations

import json

import _scale_worker as worker
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def zero3_and_single(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("zero3")
    proc = worker.torchrun(
        "--standalone",
        "--nproc-per-node",
        "2",
        mode="zero3",
        model=tiny_model_dir,
        out=out / "zero3",
    )
    try:
        single = worker.run("single", tiny_model_dir, out / "single")
    finally:
        worker.finish([proc])
    reports = [json.loads((out / "zero3" / f"report-{r}.json").read_text()) for r in (0, 1)]
    return reports, single, out


def test_zero3_partitions_model_and_reference(zero3_and_single):
    reports, _, _ = zero3_and_single
    for report in reports:
        assert report["world"] == 2
        for part in ("model_shards", "reference_shards"):
            shards = report[part]
            assert len(shards) == 21, part  # every weight of the tiny Llama, none left whole
            for name, (full, local) in shards.items():
                # ZeRO-3 pads each parameter to a multiple of the world size, then halves it
                assert local == -(-full // 2) and local < full, (part, name, full, local)


def test_zero3_loss_and_weights_match_single_process(zero3_and_single, tiny_model_dir):
    reports, single, out = zero3_and_single
    steps = worker.STEPS
    assert len(single["losses"]) == steps and all(len(r["losses"]) == steps for r in reports)
    # equal token counts per rank: the mean of the ranks' losses is the full-batch loss
    sharded = [sum(r["losses"][i] for r in reports) / 2 for i in range(steps)]
    assert sharded == pytest.approx(single["losses"], abs=1e-5)
    assert single["losses"][-1] < single["losses"][0] - 0.3  # gradient ascent is working

    exported = out / "zero3" / "exported"
    assert (exported / "model.safetensors").exists() and (exported / "tokenizer.json").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(exported).state_dict()
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    expected = load_file(str(out / "single" / "weights.safetensors"))
    assert set(reloaded) == set(expected)
    for name, tensor in expected.items():
        assert reloaded[name].shape == original[name].shape, name
        torch.testing.assert_close(reloaded[name], tensor, atol=2e-5, rtol=0, msg=name)
    moved = max((expected[k] - original[k]).abs().max().item() for k in expected)
    assert moved > 1e-3  # the comparison above is not between two untouched models


def test_a_second_zero3_fit_in_one_process_builds_a_working_model(tiny_model_dir, tmp_path):
    """A fresh process whose first Llama is built inside ``zero.Init`` fits twice. transformers
    5.25 with ``kernels`` decorates ``LlamaAttention``; when its module was first imported inside
    ``zero.Init``, the context's exit put the undecorated ``__init__`` back and the second fit's
    forward failed (``no attribute '_kernel_funcs'``). The strategy now imports the model classes
    before ``zero.Init``."""
    out = tmp_path / "twice"
    proc = worker.torchrun(
        "--standalone", "--nproc-per-node", "1", mode="zero3", model=tiny_model_dir, out=out, runs=2
    )
    worker.finish([proc])
    first, second = (json.loads((out / f"run-{i}" / "report-0.json").read_text()) for i in (0, 1))
    assert len(second["losses"]) == worker.STEPS
    # the same seed, data and weights: the second fit repeats the first
    assert second["losses"] == pytest.approx(first["losses"], abs=1e-6)
