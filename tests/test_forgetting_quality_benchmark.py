"""Smoke test of ``benchmarks/forgetting_quality.py``: its ``--smoke`` mode on the tiny model (N = 3
models per population, one method) writes the calibration rows, a method row and the markdown
section. The real figures come from running the script by hand; none of that runs in CI."""

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
    assert 0.0 <= result["null"]["p5"] <= result["null"]["p95"] <= 1.0
    assert isinstance(result["verdict"]["separated"], bool)
    text = md.read_text()
    assert "other sections stay" in text and "<!-- forgetting_quality:start -->" in text
    assert "Calibration verdict" in text and (tmp_path / result["plot"]).exists()
    # --resume trains nothing more and gives the same rows
    assert benchmark.main([*argv, "--threads", "1", "--resume"]) == 0
    again = json.loads(out.read_text())
    assert [r["F"] for r in again["rows"]] == [r["F"] for r in result["rows"]]
