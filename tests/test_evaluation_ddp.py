"""The evaluator gives the same numbers on 1 process and on 2 gloo processes (halves of the data).

One split is only seen by rank 0 and one by no rank: compute() must neither deadlock nor differ.
The processes talk through ``torch.distributed`` with the gloo backend, as DDP on CPU does.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_unlearn.evaluation import UnlearningEvaluator, default_metrics


def _synthetic_batches(seed: int = 0) -> list[tuple[str, dict, dict]]:
    """(split, stats, batch) triples with ragged documents; 'general' has a single batch."""
    g = torch.Generator().manual_seed(seed)
    plan = [("forget", -0.8)] * 4 + [("approximate", -1.5)] * 3 + [("general", -2.0)]
    plan = [plan[i] for i in (7, 0, 4, 1, 5, 2, 6, 3)]  # 'general' first: rank 0 gets it alone
    out = []
    counters: dict[str, int] = {}
    for split, centre in plan:
        b, t = 3, 9
        lengths = torch.randint(2, t + 1, (b,), generator=g)
        mask = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)
        logprob = (centre + 0.6 * torch.randn(b, t, generator=g)).clamp(max=-1e-3)
        stats = {
            "logprob": logprob * mask,
            "mu": (centre - 0.5 + 0.1 * torch.randn(b, t, generator=g)) * mask,
            "sigma": (0.5 + torch.rand(b, t, generator=g)) * mask,
            "correct": (torch.rand(b, t, generator=g) > 0.5) & mask,
            "mask": mask,
        }
        first = counters.get(split, 0)
        counters[split] = first + b
        batch = {
            "split": split,
            "zlib_len": torch.randint(20, 80, (b,), generator=g),
            "doc_index": torch.arange(first, first + b),  # each row one document
        }
        out.append((split, stats, batch))
    return out


def _evaluate(batches) -> dict[str, float]:
    """The default metrics and a toy per-token metric from outside the library; its per-document
    values come back flattened as ``docs/{split}/{name}/{i}``."""
    from toy_metrics import TokenCount

    evaluator = UnlearningEvaluator(metrics=[*default_metrics(), TokenCount()])
    for split, stats, batch in batches:
        evaluator.update(split, stats, batch)
    out = {k: float(v) for k, v in evaluator.compute().items()}
    for split, columns in evaluator.last.documents.items():
        for name, values in columns.items():
            out.update({f"docs/{split}/{name}/{i}": float(v) for i, v in enumerate(values)})
    return out


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        result = _evaluate(_synthetic_batches()[rank::world])
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_evaluator_same_result_on_one_and_two_processes(tmp_path):
    single = _evaluate(_synthetic_batches())
    assert {"forget/ppl", "approximate/ppl", "general/ppl", "mia/min_k_plus_plus_auc"} <= set(
        single
    )
    assert "retain/ppl" not in single
    assert single["toytokens/forget_tokens"] > 0 and "docs/forget/toytokens/best/11" in single
    assert 0.5 < single["mia/loss_auc"] <= 1.0  # forget scores higher, with overlap

    # fork (as Lightning's "ddp_fork" strategy does) skips re-importing torch and lightning in the
    # children, which costs more than the test itself; spawn where fork does not exist
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    args = (2, str(tmp_path / "init"), str(tmp_path))
    mp.start_processes(_worker, args=args, nprocs=2, join=True, start_method=method)
    for rank in range(2):
        multi = torch.load(tmp_path / f"rank{rank}.pt")
        assert set(multi) == set(single), rank
        for key, value in single.items():
            assert multi[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (rank, key)
