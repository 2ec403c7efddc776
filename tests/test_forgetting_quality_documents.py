"""The competition page's document-by-document part (#27), on a results dict built by hand:
distances, spreads and offsets worked out from the numbers below, and the goal / why-not text."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import forgetting_quality_documents as documents  # noqa: E402

# two forget documents; retrain seeds 1..2 (the centre) and 3..4 (the indistinguishable row)
RETRAIN = [[-2.0, -3.0], [-2.0, -3.0], [-2.1, -3.1], [-1.9, -2.9]]
# DTM+ref's two models: document 0 at -2.2 and -2.4 (mean -2.3), document 1 at -3.0 both
DTM = [[-2.2, -3.0], [-2.4, -3.0]]
TARGETS = {"kind": "reference", "tolerance": 0.05, "error": 0.1, "shift": 0.2,
           "target": {"0": -2.1, "1": -3.0}}  # fmt: skip


def results(f: float) -> dict:
    models = {
        "retrain": [{"seed": s + 1, "confidence": c} for s, c in enumerate(RETRAIN)],
        "DTM+ref": [
            {"seed": s + 1, "confidence": c, "document_targets": TARGETS, "within": w}
            for s, (c, w) in enumerate(zip(DTM, ([0.5, 0.5], [0.0, 1.0])))
        ],
    }
    row = {"key": "DTM+ref", "F": f, "retain_ratio": 0.99, "general_ratio": 1.0}
    return {
        "options": {"n": 2},
        "models": models,
        "seen_model": {"doc_index": [0, 1]},
        "rows": [row],
    }


def test_summary_by_hand():
    summary = documents.document_summary(results(0.05))
    # retrain 3..4 against the centre (-2, -3): means (-2, -3): distance 0; spread 0.1 per document
    assert summary["retrain"]["distance"] == pytest.approx(0.0, abs=1e-12)
    assert summary["retrain"]["spread"] == pytest.approx(0.1)
    row = summary["DTM+ref"]
    assert row["distance"] == pytest.approx((0.3 + 0.0) / 2)  # |-2.3 - -2| and |-3 - -3|
    assert row["spread"] == pytest.approx((0.1 + 0.0) / 2)
    assert row["offset"] == pytest.approx((-0.2 + 0.0) / 2)  # means minus targets
    # inside (tolerance 0.05): doc 0 at -2.2 / -2.4 (no, no), doc 1 at -3.0 twice (yes, yes)
    assert row["inside"] == pytest.approx(0.5)
    assert row["best_inside"] == pytest.approx((0.5 + 1.0) / 2)


def test_goal_and_why_not_name_the_numbers():
    text = "\n".join(documents.documents_text(results(0.05), {"DTM+ref": "DTM+ref"}))
    assert "- DTM+ref: F 0.050, retain ratio 0.990, general ratio 1.000: not reached" in text
    # the targets' miss: |-2.1 - -2| and |-3 - -3| -> 0.05, 0.5x the retrain spread 0.1
    assert "miss retraining by 0.050 nats per document (the never-seen model's targets, 0.5× the" in text
    assert "DTM+ref: offset -0.100, 0.50 inside at the end, spread 0.050" in text
    reached = "\n".join(documents.documents_text(results(0.2), {"DTM+ref": "DTM+ref"}))
    assert ": reached" in reached and "Why not" not in reached
