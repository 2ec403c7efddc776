"""How the robustness benchmark scores a model as it is and under every attack: what is kept of
each scoring (flat values, the values on the scored documents, the per-document values) and the
progress lines with an estimate of the time left."""

from __future__ import annotations

import gc
import time
from typing import Any

import common
from robustness_analysis import SLICE_BASE

#: per-document columns kept in the JSON (for the bootstrap and for re-analysis)
SPLITS_KEPT = ("forget", "approximate")
# rough costs on the recorded 2-core machine, for the plan printed at the start
EST_SCORING_S, EST_RELEARN_STEP_S, EST_UNLEARN_S, EST_QUANTIZE_S = 30.0, 7.0, 150.0, 5.0


def scoring_metrics() -> list:
    """What every model is scored with: perplexity per split, the four MIA attacks, and the
    forward-pass memorisation scores (no text generation: it would dominate the run on CPU)."""
    from lightning_unlearn.evaluation import MembershipInference, Memorisation, Perplexity

    return [Perplexity(), MembershipInference(), Memorisation()]


def _g7(value: Any) -> Any:
    v = common.finite(value)
    return None if v is None else float(f"{v:.7g}")


def record_of(measurement, tokens: dict[int, int], excluded: set[int], seconds: float) -> dict:
    """What is kept of one scored model: flat values, the values on the scored documents (the
    forget metrics without ``excluded``), and the per-document values of forget / approximate."""
    from lightning_unlearn.attacks import rescore

    scored = rescore(measurement.documents, tokens, exclude=excluded)
    forget_docs = [int(d) for d in measurement.documents["forget"]["doc_index"]]
    kept = [d for d in forget_docs if d not in excluded]
    if set(kept) & excluded or scored["forget/documents"] != len(kept):  # asserted, as asked
        raise AssertionError("a relearned slice document is among the scored documents")
    return {
        "excluded": sorted(excluded),
        "scored_forget": kept,
        "values": {k: _g7(v) for k, v in measurement.values.items()},
        "scored": {k: _g7(v) for k, v in scored.items()},
        "documents": {
            s: {c: [_g7(x) if c != "doc_index" else int(x) for x in v] for c, v in cols.items()}
            for s, cols in measurement.documents.items()
            if s in SPLITS_KEPT
        },
        "seconds": seconds,
    }


def derived_record(none: dict, tokens: dict[int, int], excluded: set[int]) -> dict:
    """The unattacked model on the rest of the forget set, from its ``none`` record (no pass)."""
    from lightning_unlearn.attacks import rescore

    scored = rescore(none["documents"], tokens, exclude=excluded)
    return {
        **none,
        "excluded": sorted(excluded),
        "scored_forget": [d for d in none["scored_forget"] if d not in excluded],
        "scored": {k: _g7(v) for k, v in scored.items()},
        "derived_from": "none",
        "seconds": 0.0,
    }


class Progress:
    """Progress lines with the elapsed time and a rough estimate of what is left."""

    def __init__(self, planned_scorings: int, planned_unlearning: int, started: float) -> None:
        self.left_scorings, self.left_unlearning = planned_scorings, planned_unlearning
        self.scoring_s: list[float] = []
        self.unlearn_s: list[float] = []
        self.started = started

    def line(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.started:6.0f} s] {text}", flush=True)

    def scored(self, seconds: float) -> None:
        self.scoring_s.append(seconds)
        self.left_scorings = max(0, self.left_scorings - 1)

    def unlearned(self, seconds: float) -> None:
        self.unlearn_s.append(seconds)
        self.left_unlearning = max(0, self.left_unlearning - 1)

    def left(self) -> str:
        per = sum(self.scoring_s) / len(self.scoring_s) if self.scoring_s else EST_SCORING_S
        unl = sum(self.unlearn_s) / len(self.unlearn_s) if self.unlearn_s else EST_UNLEARN_S
        return f"~{(self.left_scorings * per + self.left_unlearning * unl) / 60:.0f} min left"


def attack_model(
    key: str,
    model,
    attacks: list,
    data,
    tokens: dict[int, int],
    entry: dict,
    *,
    scorer,
    progress: Progress,
    save,
    none_measurement=None,
) -> None:
    """Score ``model`` as it is and under every attack variant into ``entry["variants"]``
    (skipping variants already there), saving after each."""
    variants = entry.setdefault("variants", {})

    def keep(name: str, measurement, excluded: set[int], seconds: float) -> None:
        variants[name] = record_of(measurement, tokens, excluded, seconds)
        s = variants[name]["scored"]
        progress.scored(seconds)
        progress.line(
            f"{key:15s} {name:26s} forget ppl {common.fmt(s.get('forget/ppl'))}, "
            f"loss AUC {common.fmt(s.get('mia/loss_auc'))} ({seconds:.0f} s; {progress.left()})"
        )
        save()

    if "none" not in variants:
        t = time.perf_counter()
        measurement = none_measurement or scorer.measure_checkpoint(model, data)
        keep("none", measurement, set(), time.perf_counter() - t)
    for attack in attacks:
        names = attack.variant_names()
        if all(n in variants for n in names):
            if getattr(attack, "data", None) == "forget_slice":
                variants.setdefault(
                    SLICE_BASE, derived_record(variants["none"], tokens, attack.excluded(data))
                )
            continue
        if getattr(attack, "data", None) == "forget_slice":
            variants[SLICE_BASE] = derived_record(variants["none"], tokens, attack.excluded(data))
        t = time.perf_counter()
        for name, attacked, excluded in attack.variants(model, data):
            if name in variants:
                t = time.perf_counter()
                continue
            measurement = scorer.measure_checkpoint(attacked, data)
            keep(name, measurement, excluded, time.perf_counter() - t)
            if name.startswith("quantize") and "quantization" not in entry:
                report = getattr(attacked, "quantization_report", {})
                entry["quantization"] = {
                    k: report.get(k) for k in ("group_size", "layers_quantized", "skipped")
                }
                entry["quantization"]["parameters_quantized"] = report.get("parameters_quantized")
            del attacked
            t = time.perf_counter()  # relearning's next steps count towards the next variant
        gc.collect()
