"""README's headline paragraph, from the two benchmarks' stored results.

The two questions a user asks first -- is the unlearned model distinguishable from retraining, and
does the forgetting survive quantization and a few relearning steps -- answered with the figures
``docs/results.md`` shows (the competition score of ``forgetting_quality.py``, the recovered
fractions of ``robustness.py``), each with its date, machine and commit. The paragraph sits in
README.md between ``<!-- headline:start -->`` and ``<!-- headline:end -->``;
``tests/test_readme_headline.py`` checks that it is this function's output and that each figure
appears in the rendered sections.

    python benchmarks/headline.py            # rewrite README.md's headline from the results
    python benchmarks/headline.py --check    # exit 1 when README.md differs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- headline:start -->", "<!-- headline:end -->"
FQ_JSON = ROOT / "benchmarks" / "results" / "forgetting_quality.json"
ROBUSTNESS_JSON = ROOT / "benchmarks" / "results" / "robustness.json"


def _stamp(provenance: dict[str, Any]) -> str:
    machine = provenance.get("machine") or {}
    cpus = machine.get("logical_cpus") or machine.get("cpus")
    where = f"{cpus}-core CPU" if cpus else "CPU"
    return f"{provenance['date'][:10]}, {where}, `{provenance['commit']}`"


def _f(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def competition(fq: dict[str, Any]) -> str:
    """The first answer: F of every row against the calibration rows and the null."""
    rows = {r["key"]: r for r in fq["rows"]}
    n = fq["options"]["n"]
    cal, seen, null = rows.get("retrain"), rows.get("seen"), fq.get("null")
    methods = [r for r in fq["rows"] if r["kind"] == "method"]
    best = max(methods, key=lambda r: r["F"]) if methods else None
    below = [r for r in methods if null and r["F"] < null["p5"]]
    if methods and len(below) == len(methods):
        answer = "Yes, with every method here: each scores below the null's 5th percentile."
    elif below:
        answer = f"With {len(below)} of {len(methods)} methods (below the null's 5th percentile)."
    else:
        answer = "Not by this score: every method is within the null's spread."
    text = (
        f"**Is the unlearned model distinguishable from retraining?** {answer} The competition's "
        f"forgetting quality F over N = {n} models per side "
        f"(`docs/results.md`, {_stamp(fq['provenance'])}): "
    )
    if cal is not None:
        text += f"retraining against retraining scores {_f(cal['F'], 3)}"
        if null:
            text += (
                f" (a permutation null of retrain models: median {_f(null['median'], 3)}, "
                f"5–95% {_f(null['p5'], 3)}–{_f(null['p95'], 3)})"
            )
    if seen is not None:
        text += f", a model never unlearned {_f(seen['F'], 3)}"
    text += "; " + ", ".join(f"{r['label']} {_f(r['F'], 3)}" for r in methods) + "."
    if best is not None and cal is not None and seen is not None and cal["F"] > seen["F"]:
        way = (best["F"] - seen["F"]) / (cal["F"] - seen["F"])
        text += (
            f" The best, {best['label']}, is {way:.0%} of the way from never unlearned to "
            "indistinguishable."
        )
    return text


def robustness(rob: dict[str, Any]) -> str:
    """The second answer: the recovered fractions after quantization and relearning."""
    answers = rob["analysis"]["answers"]
    by_variant, by_method = answers["by_variant"], answers["by_method"]
    labels = {"quantize_8bit": "8-bit", "quantize_4bit": "4-bit"}
    quant = [f"{labels[v]} {_f(by_variant[v], 2)}" for v in labels if by_variant.get(v) is not None]
    relearn = {v: f for v, f in by_variant.items() if v.startswith("relearn") and f is not None}
    text = (
        "**Does the forgetting survive quantization and a few relearning steps?** "
        f"(`docs/results.md`, {_stamp(rob['provenance'])}; the recovered fraction of the forget "
        "set's log-perplexity gap, 0 = like the exact-retrain model, 1 = back to the model "
        "before unlearning, mean over the methods): "
    )
    if quant:
        worst = max(by_variant[v] for v in labels if by_variant.get(v) is not None)
        verb = "almost nothing" if worst < 0.1 else "part of it"
        text += f"quantization brings back {verb} (" + ", ".join(quant) + ")"
    if relearn:
        strongest = max(relearn, key=relearn.get)
        steps = strongest.rsplit("_k", 1)[-1]
        data = "a held-out slice of the forget set" if "slice" in strongest else "retain text"
        text += f"; relearning does: {steps} steps on {data} bring back {_f(relearn[strongest], 2)}"
    ranking = answers["ranking"]
    if ranking:
        first, last = ranking[0], ranking[-1]
        text += (
            f". Over all attacks the forgetting of {first} lasts best (mean "
            f"{_f(by_method[first]['mean'], 2)}), that of {last} least "
            f"({_f(by_method[last]['mean'], 2)})"
        )
        if by_method[first]["mean"] < 0:  # below 0: still past the retrain model, not "better"
            text += (
                f"; below 0, {first} stays past the exact-retrain model (it overshot at the stop, "
                f"{_f(by_method[first]['at_stop'], 2)}), which an attacker can also see"
            )
    if not rob.get("complete"):
        text += f" ({len(rob['models']) - 2} methods measured so far)"
    return text + "."


def headline(fq: dict[str, Any], rob: dict[str, Any]) -> str:
    return competition(fq) + "\n\n" + robustness(rob)


def _wrap(text: str, width: int = 100) -> str:
    import textwrap

    return "\n\n".join(textwrap.fill(p, width) for p in text.split("\n\n"))


def render() -> str:
    fq = json.loads(FQ_JSON.read_text())
    rob = json.loads(ROBUSTNESS_JSON.read_text())
    return _wrap(headline(fq, rob))


def replace(readme: str, body: str) -> str:
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md has no {START} ... {END} block")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{body}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 when README.md differs")
    args = p.parse_args(argv)
    path = ROOT / "README.md"
    readme = path.read_text()
    new = replace(readme, render())
    if args.check:
        return 0 if new == readme else 1
    path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
