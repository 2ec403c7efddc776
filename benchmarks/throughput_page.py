"""The throughput benchmark's targets and its sections of ``docs/performance.md`` (the
implementations side by side, the backward orders), from the stored results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import common

CHECK_HEADER = ["check", "measured", "target", "met"]


def _op(check: dict[str, Any]) -> str:
    return "≤" if check.get("upper_bound") else "≥"


def _check(name: str, value: float, target: float, *, upper: bool = False, judged: bool = True):
    """A target: ``value`` at least ``target`` (at most with ``upper``); ``judged=False``: shown,
    not judged (``ok`` is ``None``)."""
    ok = (value <= target if upper else value >= target) if judged else None
    return {
        "check": name,
        "value": value,
        "target": target,
        "ok": ok,
        **({"upper_bound": True} if upper else {}),
    }


def order_checks(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue #19's targets: memory of the retain methods over GA's (sequential), and sequential
    tokens/s over joint's."""
    by = {(r["method"], r["backward"]): r for r in rows}
    out = []
    for method, base, limit in (("GA+GD", "GA", 1.10), ("GA+KL (LoRA)", "GA (LoRA)", 1.15)):
        for order in ("joint", "sequential"):
            ga = by.get((base, order))
            r = by.get((method, order))
            if ga and r:
                ratio = r["peak_rss_mb"] / ga["peak_rss_mb"]
                name = f"{method} / {base} peak RSS, {order}"
                out.append(_check(name, ratio, limit, upper=True, judged=order == "sequential"))
        joint, seq = by.get((method, "joint")), by.get((method, "sequential"))
        if joint and seq:
            ratio = seq["median_tokens_per_s"] / joint["median_tokens_per_s"]
            out.append(_check(f"{method}: sequential / joint tokens/s (medians)", ratio, 0.97))
    return out


def render_orders(result: dict[str, Any]) -> str:
    lines = [
        common.provenance_line(result["provenance"]),
        "",
        f"`benchmarks/throughput.py --backward-orders`: the library's two backward orders on "
        f"`{Path(result['model']).name}`, max_length {result['max_length']}, batch "
        f"{result['batch_size']}, {result['warmup']} warm-up step(s) then {result['timed_steps']} "
        "timed steps per row, one fresh process per row (its own peak RSS), rows interleaved "
        "(joint first for one method, sequential first for the next). Tokens/s from the median "
        "step.",
        "",
    ]
    header = ["method", "backward", "median s/step", "tokens/s (median step)", "peak RSS (MiB)"]
    rows = [
        [
            r["method"],
            r["backward"],
            f"{r['median_step_seconds']:.2f}",
            f"{r['median_tokens_per_s']:.1f}",
            f"{r['peak_rss_mb']:.0f}",
        ]
        for r in result["rows"]
    ]
    lines += [*common.markdown_table(header, rows), ""]
    checked = []
    for c in result["checks"]:
        met = "—" if c["ok"] is None else ("yes" if c["ok"] else "**no**")
        checked.append([c["check"], f"{c['value']:.3f}", f"{_op(c)} {c['target']:.2f}", met])
    lines += common.markdown_table(CHECK_HEADER, checked)
    if result.get("notes"):
        lines += ["", result["notes"]]
    return "\n".join(lines)


def checks(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, as ratios within this run."""
    by = {(r["impl"], r["method"], r["max_length"]): r for r in rows}
    out = []
    for (impl, method, length), r in sorted(by.items(), key=lambda kv: (kv[0][2], kv[0][1])):
        if impl != "lightning_unlearn":
            continue
        loop = by.get(("torch_loop", method, length))
        hf = by.get(("hf_trainer_padded", method, length))
        if loop:
            ratio = r["tokens_per_s"] / loop["tokens_per_s"]
            name = f"{method} @ {length}: lightning_unlearn / torch_loop tokens/s"
            out.append(_check(name, ratio, 0.95))
        if hf:
            need = 0.95 / (1.0 - hf["padding_waste"])
            ratio = r["tokens_per_s"] / hf["tokens_per_s"]
            name = f"{method} @ {length}: lightning_unlearn / hf_trainer_padded real tokens/s"
            out.append(_check(name, ratio, need))
        out.append(_check(f"{method} @ {length}: lightning_unlearn MFU", r["mfu"], 0.55))
    for length in sorted({r["max_length"] for r in rows}):
        for suffix, limit in (("", 1.6), (" (LoRA)", 1.15)):
            ga = by.get(("lightning_unlearn", "GA" + suffix, length))
            kl = by.get(("lightning_unlearn", "GA+KL" + suffix, length))
            if ga and kl:
                ratio = kl["peak_rss_mb"] / ga["peak_rss_mb"]
                name = f"GA+KL{suffix} / GA{suffix} peak RSS @ {length}"
                out.append(_check(name, ratio, limit, upper=True))
    return out


def render(result: dict[str, Any]) -> str:
    rows = result["rows"]
    lines = [
        common.provenance_line(result["provenance"]),
        "",
        f"Model: `{Path(result['model']).name}` ({result['params'] / 1e6:.1f} M parameters), fp32. "
        f"Matmul peak measured in the same run: **{result['matmul_peak_gflops']:.1f} GFLOP/s** "
        f"(best of {result['matmul_repeats']} fp32 {result['matmul_size']}² matmuls on "
        f"{result['provenance']['machine']['torch_threads']} threads). Batch "
        f"{result['batch_size']} × max_length, {result['warmup']} warm-up step(s), then "
        f"{result['steps']} timed step(s) at 512 and {result['steps_long']} at longer lengths; one "
        "fresh process per row. Corpus: whole standard-library modules (forget) and other modules "
        f"(retain), {result['documents']} each. Real tokens = forget + retain tokens that are not "
        "padding. MFU: model FLOPs (PaLM: 6N + 12·L·d·T per trained position, 2N + 4·L·d·T per "
        "reference-forward position, padding included) per second over the matmul peak.",
        "",
    ]
    header = [
        "impl",
        "method",
        "max_length",
        "real tokens/s",
        "padded positions/s",
        "padding waste",
        "MFU",
        "peak RSS (MiB)",
        "s/step",
    ]
    lines += common.markdown_table(
        header,
        [
            [
                r["impl"],
                r["method"],
                r["max_length"],
                f"{r['tokens_per_s']:.1f}",
                f"{r['positions_per_s']:.1f}",
                f"{100 * r['padding_waste']:.1f}%",
                f"{100 * r['mfu']:.1f}%",
                f"{r['peak_rss_mb']:.0f}",
                f"{r['seconds_per_step']:.2f}",
            ]
            for r in rows
        ],
    )
    waste = result.get("padding_waste_by_length")
    if waste:
        lines += [
            "",
            "Padding waste of per-document chunking (what packing recovers), this corpus: "
            + ", ".join(f"{100 * v:.1f}% at {k}" for k, v in waste.items())
            + ".",
        ]
    lines += [
        "",
        "Targets (ratios within this run):",
        "",
    ]
    checked = []
    for c in result["checks"]:
        pct = "MFU" in c["check"]
        value = f"{100 * c['value']:.1f}%" if pct else f"{c['value']:.3f}"
        target = f"{100 * c['target']:.0f}%" if pct else f"{c['target']:.3f}"
        checked.append([c["check"], value, f"{_op(c)} {target}", "yes" if c["ok"] else "**no**"])
    lines += common.markdown_table(CHECK_HEADER, checked)
    if result.get("notes"):
        lines += ["", result["notes"]]
    return "\n".join(lines)
