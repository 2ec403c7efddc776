"""A "two node" run on one machine: torchrun with two node ranks over loopback, DDP on CPU.

GA+KL with each node taking half of every batch must end with the weights of a single-process
run on the full batches.
"""

from __future__ import annotations

import json

import _scale_worker as worker
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

pytestmark = pytest.mark.slow


def test_two_node_ddp_matches_single_process(tiny_model_dir, tmp_path):
    port = str(worker.free_port())
    procs = [
        worker.torchrun(
            "--nnodes",
            "2",
            "--nproc-per-node",
            "1",
            "--node-rank",
            str(rank),
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            port,
            mode="ddp",
            model=tiny_model_dir,
            out=tmp_path / "two-node",
        )
        for rank in (0, 1)
    ]
    try:
        single = worker.run("single", tiny_model_dir, tmp_path / "single")
    finally:
        worker.finish(procs)

    reports = [json.loads((tmp_path / "two-node" / f"report-{r}.json").read_text()) for r in (0, 1)]
    assert {(r["rank"], r["world"]) for r in reports} == {(0, 2), (1, 2)}
    # the nodes saw different halves of each batch...
    assert reports[0]["losses"][0] != pytest.approx(reports[1]["losses"][0], abs=1e-4)
    # ...and together the full batch
    mean = [(a + b) / 2 for a, b in zip(reports[0]["losses"], reports[1]["losses"])]
    assert mean == pytest.approx(single["losses"], abs=1e-5)

    two_node = load_file(str(tmp_path / "two-node" / "weights.safetensors"))
    expected = load_file(str(tmp_path / "single" / "weights.safetensors"))
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    assert set(two_node) == set(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(two_node[name], tensor, atol=1e-5, rtol=0, msg=name)
    assert max((expected[k] - original[k]).abs().max().item() for k in expected) > 1e-3
