"""Smoke tests of the benchmark scripts: each runs its ``--smoke`` mode on the tiny model and
writes JSON of the documented shape with finite, positive numbers. The real figures come from
running the scripts by hand (``benchmarks/README.md``); none of that runs in CI."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str):
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _smoke_args(model, out: Path, md: Path, *extra: str) -> list[str]:
    """The command line every benchmark's smoke run shares: tiny model, JSON + Markdown, 1 thread."""
    common = ["--smoke", "--model", str(model), "--json", str(out), "--markdown", str(md)]
    return [*common, "--threads", "1", *extra]


@pytest.mark.slow
def test_quality_smoke(tiny_model_dir, tmp_path):
    quality = _load("quality")
    out = tmp_path / "results.json"
    md = tmp_path / "results.md"
    assert quality.main(_smoke_args(tiny_model_dir, out, md)) == 0
    result = json.loads(out.read_text())
    assert _positive(result["target_ppl"])
    for ref in ("seen", "exact_retrain"):
        assert all(_positive(v) for v in result[ref]["ppl"].values())
        assert all(0.0 <= v <= 1.0 for v in result[ref]["mia_auc"].values() if v is not None)
    assert {run["method"] for run in result["runs"]} == {"GA", "GA+GD in-dist"}
    for run in result["runs"]:
        assert run["steps"] >= max(result["grid"]["budgets"])
        assert _positive(run["seconds_per_step"])
        for record in run["records"]:
            assert isinstance(record["reached_target"], bool)
            assert record["distance_to_exact"]["mean_abs_log"] >= 0
            assert _positive(record["train_seconds"]) and record["tokens"] > 0
    assert set(result["answers"]) == {"a_robustness", "b_stop_vs_exact", "c_tradeoff"}
    assert _positive(result["pretraining"]["pretrain"]["seconds"])
    text = md.read_text()
    for heading in (
        "(a) Robustness",
        "(b) Does stopping",
        "(c) Forget / utility",
        "Time to forget",
    ):
        assert heading in text
    assert (tmp_path / result["plots"]["tradeoff"]).exists()
    # re-rendering from the JSON alone gives the same document
    md2 = tmp_path / "again.md"
    assert quality.main(["--render-only", "--json", str(out), "--markdown", str(md2)]) == 0
    assert md2.read_text() == text


@pytest.mark.slow
def test_throughput_smoke(tiny_model_dir, tmp_path):
    throughput = _load("throughput")
    out = tmp_path / "throughput.json"
    md = tmp_path / "performance.md"
    assert (
        throughput.main(_smoke_args(tiny_model_dir, out, md, "--workdir", str(tmp_path / "work")))
        == 0
    )
    result = json.loads(out.read_text())
    rows = result["rows"]
    impls = {r["impl"] for r in rows}
    assert impls == {"lightning_unlearn", "hf_trainer_padded", "torch_loop"}
    for row in rows:
        for key in (
            "impl",
            "method",
            "max_length",
            "tokens_per_s",
            "peak_rss_mb",
            "mfu",
            "padding_waste",
        ):
            assert key in row
        assert isinstance(row["impl"], str) and isinstance(row["method"], str)
        assert isinstance(row["max_length"], int)
        for key in ("tokens_per_s", "peak_rss_mb", "mfu"):
            assert _positive(row[key]), (key, row)
        assert 0.0 <= row["padding_waste"] < 1.0
    packed = [r for r in rows if r["impl"] != "hf_trainer_padded"]
    assert all(r["padding_waste"] < 0.05 for r in packed)
    assert result["checks"] and all(isinstance(c["ok"], bool) for c in result["checks"])
    assert "<!-- throughput:start -->" in md.read_text()


@pytest.mark.slow
def test_eval_speed_smoke(tiny_model_dir, tmp_path):
    eval_speed = _load("eval_speed")
    out = tmp_path / "eval_speed.json"
    md = tmp_path / "performance.md"
    assert (
        eval_speed.main(
            _smoke_args(tiny_model_dir, out, md, "--cache-dir", str(tmp_path / "cache"))
        )
        == 0
    )
    result = json.loads(out.read_text())
    for key in ("one_pass_tokens_per_s", "two_pass_tokens_per_s", "speedup", "target_tokens"):
        assert _positive(result[key])
    # one pass and two passes compute the same perplexities and AUCs
    assert result["max_relative_difference"] < 1e-4
    assert "forget/ppl" in result["metrics_one_pass"]
    assert "mia/min_k_plus_plus_auc" in result["metrics_two_passes"]
    assert "<!-- eval_speed:start -->" in md.read_text()


def test_replace_section_keeps_the_rest(tmp_path):
    common = _load("common")
    doc = tmp_path / "doc.md"
    doc.write_text("# Title\n\nintro\n\n## GPU scale\n\npending\n")
    common.replace_section(doc, "x", "first", title="Title")
    common.replace_section(doc, "x", "second", title="Title")
    text = doc.read_text()
    assert "second" in text and "first" not in text
    assert text.count("<!-- x:start -->") == 1 and "pending" in text
