"""Run the attacks on the unlearned model and its two ends, and judge whether forgetting lasted.

For each attack variant (``relearn_retain_k4``, ``relearn_forget_slice_k8``, ``quantize_4bit``...)
the unlearned model U, the model before unlearning B and, when there is one, the exact-retrain
model R are attacked (each on a copy) and measured by the workflow's token metrics on the forget
and approximate splits, with the forget documents a relearning attack trained on left out. For
the forget log-perplexity (``forget/nll``) and the loss attack's AUC (``mia/loss_auc``):

* with R: the recovered fraction ``(m(U_att) - m(R_att)) / (m(B_att) - m(R_att))``, "n/a" when
  the paired bootstrap interval of ``m(B_att) - m(R_att)`` contains 0 (the attack made the ends
  indistinguishable), the ends' own values beside it;
* without R: the raw change ``m(U_att) - m(U)``, both on the same documents (the unlearned
  model's measurement rescored without the relearned slice).

Forgetting *survived* an attack when less than ``threshold`` (default half) of what unlearning
removed came back (recovered fraction below it); the verdict says so per variant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from .recovery import ends_interval, raw_change, recovered_fraction, rescore

__all__ = ["ATTACK_METRICS", "run_attacks", "attack_section", "attack_verdicts"]

#: the metrics whose recovery is judged (lower forget log-ppl / higher AUC: more remembered)
ATTACK_METRICS = ("forget/nll", "mia/loss_auc")
#: what an attacked model is scored on
ATTACK_SPLITS = ("forget", "approximate")


def _tokens(measurement) -> dict[int, int]:
    forget = measurement.documents.get("forget", {})
    return {int(d): int(n) for d, n in zip(forget.get("doc_index", []), forget.get("tokens", []))}


def run_attacks(
    workflow: Any,
    attacks: Sequence[Any],
    datamodule: Any,
    *,
    unlearned: nn.Module | str,
    before: nn.Module | str | None = None,
    retrain: nn.Module | str | None = None,
    threshold: float = 0.5,
    progress: Any = None,
) -> dict[str, Any]:
    """Attack U (and B, R) with every variant of ``attacks``; returns the report's ``attacks``
    section: ``{"threshold", "ends", "variants": {name: {"excluded", "values": {end: {...}},
    "recovered": {metric: fraction | None}, "interval": {metric: [low, high]}, "change":
    {metric: raw change}, "survived": bool | None}}}``."""
    ends = {"unlearned": unlearned, "before": before, "retrain": retrain}
    ends = {k: v for k, v in ends.items() if v is not None}
    splits = [s for s in ATTACK_SPLITS if s in datamodule.eval_sources]
    plain = {
        end: workflow.measure_checkpoint(model, datamodule, generation=False, splits=splits)
        for end, model in ends.items()
    }
    variants: dict[str, dict[str, Any]] = {}
    for attack in attacks:
        for end, model in ends.items():
            net = workflow.load(model) if isinstance(model, str) else model
            for name, copy, excluded in attack.variants(net, datamodule):
                measured = workflow.measure_checkpoint(
                    copy,
                    datamodule,
                    generation=False,
                    splits=splits,
                    exclude={"forget": excluded},
                )
                row = variants.setdefault(
                    name, {"excluded": sorted(excluded), "values": {}, "_documents": {}}
                )
                row["values"][end] = {
                    k: v
                    for k, v in measured.values.items()
                    if k in ATTACK_METRICS or k.startswith("forget/")
                }
                row["_documents"][end] = measured.documents
                if progress is not None:
                    progress(
                        f"attack {name} on {end}: forget nll "
                        f"{measured.values.get('forget/nll', float('nan')):.3f}"
                    )
            del net
    tokens = _tokens(plain["unlearned"])
    for row in variants.values():
        row["recovered"], row["interval"], row["change"] = {}, {}, {}
        docs = row.pop("_documents")
        # U before the attack, on the documents the attacked copy was scored on
        unattacked = (
            rescore(plain["unlearned"].documents, tokens, exclude=row["excluded"])
            if row["excluded"]
            else plain["unlearned"].values
        )
        for metric in ATTACK_METRICS:
            u = row["values"]["unlearned"].get(metric)
            row["change"][metric] = raw_change(unattacked.get(metric), u)
            if "before" in row["values"] and "retrain" in row["values"]:
                interval = ends_interval(
                    docs["before"], docs["retrain"], metric, tokens, exclude=row["excluded"]
                )
                row["interval"][metric] = list(interval)
                row["recovered"][metric] = recovered_fraction(
                    u,
                    row["values"]["before"].get(metric),
                    row["values"]["retrain"].get(metric),
                    ends_interval=interval,
                )
        fraction = row["recovered"].get("forget/nll")
        row["survived"] = None if fraction is None else bool(fraction < threshold)
    return {
        "threshold": threshold,
        "ends": sorted(ends),
        "plain": {end: m.values for end, m in plain.items()},
        "variants": variants,
    }


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def attack_verdicts(section: Mapping[str, Any]) -> list[str]:
    """One line per attack variant: did forgetting survive it (forget log-perplexity)?"""
    lines = []
    for name, row in section["variants"].items():
        values = row["values"]
        u = values["unlearned"].get("forget/nll")
        if "retrain" in values and "before" in values:
            b, r = values["before"].get("forget/nll"), values["retrain"].get("forget/nll")
            fraction = row["recovered"].get("forget/nll")
            ends = f"forget log-ppl U {_fmt(u)}, B {_fmt(b)}, R {_fmt(r)}"
            if fraction is None:
                lines.append(
                    f"attack {name}: n/a, the attack left B and R indistinguishable ({ends})"
                )
            else:
                word = "SURVIVED" if row["survived"] else "DID NOT SURVIVE"
                lines.append(
                    f"attack {name}: forgetting {word}: recovered {fraction:.2f} of the "
                    f"forget log-perplexity unlearning removed ({ends})"
                )
        else:
            change = row["change"].get("forget/nll")
            lines.append(
                f"attack {name}: forget log-ppl {_fmt(u)} after the attack "
                f"(change {_fmt(change)}; no exact-retrain model to compare with)"
            )
    return lines


def attack_section(section: Mapping[str, Any]) -> dict[str, str]:
    """The report.md section: per variant the recovered fractions with the ends' values."""
    rows = [
        "| attack | forget log-ppl U / B / R | recovered | loss AUC U / B / R | recovered |",
        "|---|---|---:|---|---:|",
    ]
    for name, row in section["variants"].items():
        cells = [name]
        for metric in ATTACK_METRICS:
            values = [
                row["values"].get(end, {}).get(metric) for end in ("unlearned", "before", "retrain")
            ]
            cells.append(" / ".join(_fmt(v) for v in values))
            fraction = row["recovered"].get(metric)
            cells.append(
                _fmt(fraction)
                if metric in row["recovered"]
                else f"change {_fmt(row['change'].get(metric))}"
            )
        rows.append("| " + " | ".join(cells) + " |")
    intro = (
        "Each attack runs on a copy of the unlearned model (U), of the model before unlearning (B) "
        "and of the exact-retrain model (R) when given; relearning on a slice of the forget set "
        "scores only the rest of it. Recovered fraction = (m(U) - m(R)) / (m(B) - m(R)) after the "
        "attack: 0 = like a model that never saw the data, 1 = all of it back; n/a when B and R "
        "are within the bootstrap interval of each other."
    )
    return {
        "title": "Does it stay forgotten? Attacks",
        "markdown": intro + "\n\n" + "\n".join(rows),
    }
