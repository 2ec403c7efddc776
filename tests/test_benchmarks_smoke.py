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


def test_forgetting_quality_times_each_side_on_one_machine():
    """A run resumed on another machine: the time ratio compares models of one machine only."""
    benchmark = _load("forgetting_quality_analysis")
    unlearned = [{"host": "b", "seconds": 6.0}, {"host": "b", "seconds": 8.0},
                 {"host": "a", "seconds": 1.0}]  # fmt: skip
    retrained = [{"host": "a", "seconds": 2.0}, {"host": None, "seconds": 3.0},
                 {"host": "b", "seconds": 20.0}, {"host": "b", "seconds": 30.0}]  # fmt: skip
    timing = benchmark.same_host_seconds(unlearned, retrained)
    assert timing == {"host": "b", "models": [2, 2], "unlearned": 7.0, "retrained": 25.0}
    # the retrain side has no model from the unlearned side's machine: no time ratio
    none = benchmark.same_host_seconds(unlearned, retrained[:2])
    assert none["retrained"] is None and none["models"] == [2, 0]
    # runs from before machines were recorded count as one machine (None)
    old = benchmark.same_host_seconds([{"seconds": 4.0}], [{"seconds": 2.0}, {"host": "a"}])
    assert old == {"host": None, "models": [1, 1], "unlearned": 4.0, "retrained": 2.0}


@pytest.mark.slow
def test_forgetting_quality_smoke(tiny_model_dir, tmp_path):
    benchmark = _load("forgetting_quality")
    out, md = tmp_path / "fq.json", tmp_path / "results.md"
    md.write_text("# Results\n\nother sections stay\n")
    argv = ["--smoke", "--model", str(tiny_model_dir), "--json", str(out), "--markdown", str(md)]
    assert benchmark.main([*argv, "--threads", "1"]) == 0
    result = json.loads(out.read_text())
    n = result["options"]["n"]
    assert result["complete"] and n == 3
    assert [len(result["models"][k]) for k in ("retrain", "seen", "GA+GD")] == [2 * n, n, n]
    rows = {r["key"]: r for r in result["rows"]}
    assert [r["kind"] for r in result["rows"]] == ["calibration", "calibration", "method"]
    for row in rows.values():
        assert row["n"] == n and 0.0 <= row["F"] <= 1.0
        assert len(row["points"]) == len(result["seen_model"]["confidence"])
    method = rows["GA+GD"]
    for key in ("score", "retain_ratio", "general_ratio", "seconds_unlearned", "seconds_retrained"):
        assert isinstance(method[key], float) and math.isfinite(method[key]), key
    assert method["seconds_unlearned"] > 0 and method["seconds_retrained"] > 0
    # every retrain model times the retrain side (one machine here: all of them)
    assert method["timed_models"] == [n, 2 * n] and method["timed_host"] is not None
    assert [r["models"] for r in result["runs"]] == [4 * n]
    assert {m["host"] for ms in result["models"].values() for m in ms} == {method["timed_host"]}
    assert 0.0 <= result["null"]["p5"] <= result["null"]["p95"] <= 1.0
    assert isinstance(result["verdict"]["separated"], bool)
    text = md.read_text()
    assert "other sections stay" in text and "<!-- forgetting_quality:start -->" in text
    assert "Calibration verdict" in text and (tmp_path / result["plot"]).exists()
    # --resume trains nothing more and gives the same rows
    assert benchmark.main([*argv, "--threads", "1", "--resume"]) == 0
    again = json.loads(out.read_text())
    assert [r["F"] for r in again["rows"]] == [r["F"] for r in result["rows"]]
    # the time it took adds up over the runs: the second trained nothing
    assert [r["models"] for r in again["runs"]] == [4 * n, 0]
    assert again["total_seconds"] == pytest.approx(sum(r["seconds"] for r in again["runs"]))
    assert again["total_seconds"] > result["total_seconds"]
    assert "**Time.** The benchmark took" in md.read_text()
    # a budget spent after the first model (0 minutes), then --resume: the values of the
    # uninterrupted run (times and dates aside)
    cut, cut_md = tmp_path / "cut.json", tmp_path / "cut.md"
    argv = [
        "--smoke",
        "--model",
        str(tiny_model_dir),
        "--json",
        str(cut),
        "--markdown",
        str(cut_md),
    ]
    assert benchmark.main([*argv, "--threads", "1", "--budget-minutes", "0"]) == 0
    partial = json.loads(cut.read_text())
    assert not partial["complete"] and sum(len(v) for v in partial["models"].values()) == 1
    assert f"1 of {4 * n} models scored so far; left: retrain {2 * n - 1}, seen {n}, GA+GD {n}" in (
        cut_md.read_text()
    )
    assert benchmark.main([*argv, "--threads", "1", "--resume"]) == 0
    resumed = json.loads(cut.read_text())
    assert resumed["complete"] and [r["models"] for r in resumed["runs"]] == [1, 4 * n - 1]

    def values(models):  # every field but the times and the machine
        return {k: [{f: v for f, v in m.items() if "seconds" not in f and f != "host"} for m in ms]
                for k, ms in models.items()}  # fmt: skip

    assert values(resumed["models"]) == values(result["models"])
    for a, b in zip(resumed["rows"], result["rows"]):
        assert (a["key"], a["F"], a["points"]) == (b["key"], b["F"], b["points"])


@pytest.mark.slow
def test_robustness_benchmark_smoke(tiny_model_dir, tmp_path):
    robustness = _load("robustness")
    out, md = tmp_path / "robustness.json", tmp_path / "results.md"
    args = ["--smoke", "--model", str(tiny_model_dir), "--json", str(out), "--markdown", str(md)]
    args += ["--threads", "1", "--quality-json", str(tmp_path / "absent.json")]
    assert robustness.main(args) == 0
    result = json.loads(out.read_text())
    assert result["complete"]
    assert set(result["models"]) == {"B", "R", "GA", "GA+GD in-dist"}
    expected = {
        "none",
        "relearn_forget_slice_k0",
        *(f"relearn_{d}_k{k}" for d in ("retain", "forget_slice") for k in (1, 2)),
        "quantize_8bit",
        "quantize_4bit",
    }
    the_slice = set(result["slice"]["slice"])
    for key, entry in result["models"].items():
        assert set(entry["variants"]) == expected, key
        for name, record in entry["variants"].items():
            scored, excluded = set(record["scored_forget"]), set(record["excluded"])
            assert scored.isdisjoint(excluded)
            if name.startswith("relearn_forget_slice"):
                assert excluded == the_slice and scored == set(result["slice"]["rest"])
            else:
                assert not excluded
            assert record["scored"]["forget/documents"] == len(scored)
            assert record["scored"]["forget/ppl"] > 0
    fractions = result["analysis"]["fractions"]
    for method in ("GA", "GA+GD in-dist"):
        for row in fractions[method].values():
            for cell in row.values():
                f = cell["fraction"]
                assert f is None or math.isfinite(f)
    ends = result["analysis"]["ends"]["quantize_4bit"]["forget/nll"]
    assert ends["before"] > 0 and ends["retrain"] > 0 and len(ends["interval"]) == 2
    text = md.read_text()
    assert "<!-- robustness:start -->" in text and "<!-- robustness:end -->" in text
    assert "| attack | GA | GA+GD in-dist | B (before) | R (exact retrain) |" in text
    assert "**Which method's forgetting lasts.**" in text
    assert (tmp_path / result["plot"]).exists()
    # --resume with everything done scores nothing again
    assert robustness.main([*args, "--resume"]) == 0
    resumed = json.loads(out.read_text())
    assert resumed["models"] == result["models"]
    text = md.read_text()
    # the section is replaced in place, and re-rendering from the JSON alone gives the same text
    md.write_text("# Results\n\nkept\n\n" + text.split("# Results", 1)[1])
    assert robustness.main(["--render-only", "--json", str(out), "--markdown", str(md)]) == 0
    again = md.read_text()
    assert "kept" in again and again.count("<!-- robustness:start -->") == 1
    assert again.split("<!-- robustness:start -->")[1] == text.split("<!-- robustness:start -->")[1]
