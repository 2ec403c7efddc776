"""The unlearning report: ``report.json``, ``report.md`` and ``perplexity.png``.

``report.json`` has this shape (more keys may be added)::

    {"model": str, "method": str, "steps": int, "seconds": float,
     "before": {"ppl": {"forget": x, "approximate": x, "retain": x, "general": x},
                "mia_auc": {"loss": x, "zlib": x, "min_k": x, "min_k_plus_plus": x}},
     "after": {same shape}, "target_ppl": x,
     "exact_retrain": {same shape}}          # only where an exact-retrain model was scored

Each section also carries ``acc`` (next-token accuracy per split) and ``mia_tpr_at_5_fpr``.
Missing values (a split that was not evaluated) are ``null``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..io import atomic_write_json, atomic_write_text
from .metrics import EVAL_SPLITS
from .mia import MIA_SCORES
from .results import approximate_target, normalise_metrics

__all__ = ["build_report", "section", "write_report", "format_table", "plot_perplexity"]

_REQUIRED = ("model", "method", "steps", "seconds", "before", "after", "target_ppl")


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def section(
    metrics: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
) -> dict[str, dict[str, float | None]]:
    """Nest a flat metric dict (evaluator or ``trainer.validate`` output) into a report section."""
    flat = normalise_metrics(metrics)
    return {
        "ppl": {s: _finite(flat.get(f"{s}/ppl")) for s in EVAL_SPLITS},
        "mia_auc": {m: _finite(flat.get(f"mia/{m}_auc")) for m in MIA_SCORES},
        "acc": {s: _finite(flat.get(f"{s}/acc")) for s in EVAL_SPLITS},
        "mia_tpr_at_5_fpr": {m: _finite(flat.get(f"mia/{m}_tpr_at_5_fpr")) for m in MIA_SCORES},
    }


def build_report(
    *,
    model: str,
    method: str,
    steps: int,
    seconds: float,
    before: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    after: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    target_ppl: float | None = None,
    exact_retrain: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    pretrained: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    history: list[dict[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the report dict (see the module docstring for its shape).

    Args:
        model: the unlearned model's name or path.
        method: the unlearning method's name (e.g. ``"GradientAscentDescent"``).
        steps: optimizer steps taken.
        seconds: wall-clock seconds of unlearning.
        before: metrics of the original model (flat evaluator dict or ``trainer.validate`` output).
        after: metrics of the unlearned model, same forms.
        target_ppl: the approximate-retrain target; ``None`` takes ``before``'s approximate
            perplexity.
        exact_retrain: metrics of a model retrained without the forget set, when one exists.
        pretrained: metrics of the model before the forget set was learned, when the experiment
            taught it the forget set by fine-tuning (reported under ``"pretrained"``).
        history: per-validation perplexities (``ApproximateRetrainStopping.history``).
        extra: more top-level keys (must not replace the ones above).

    Raises:
        EmptyApproximateSplitError: no target given and ``before`` has no approximate perplexity.
    """
    target = approximate_target(before) if target_ppl is None else float(target_ppl)
    if not math.isfinite(target) or target <= 0:
        approximate_target({"approximate/ppl": target})  # raises the clear empty-split message
    report: dict[str, Any] = {
        "model": str(model),
        "method": str(method),
        "steps": int(steps),
        "seconds": float(seconds),
        "before": section(before),
        "after": section(after),
        "target_ppl": target,
    }
    if exact_retrain is not None:
        report["exact_retrain"] = section(exact_retrain)
    if pretrained is not None:
        report["pretrained"] = section(pretrained)
    if history:
        report["history"] = [dict(entry) for entry in history]
    for key, value in (extra or {}).items():
        if key in report:
            raise ValueError(f"extra key {key!r} would replace the report's own {key!r}; rename it")
        report[key] = value
    return report


# ----------------------------------------------------------------------------------- text
def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _change(before: float | None, after: float | None) -> str:
    if before is None or after is None or before == 0:
        return "—"
    return f"{100.0 * (after - before) / before:+.1f}%"


def _columns(report: Mapping[str, Any]) -> list[str]:
    extra = [c for c in ("exact_retrain", "pretrained") if c in report]
    return ["before", "after", *extra]


def _rows(report: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    cols = _columns(report)
    header = ["metric", *cols, "after vs before"]
    rows = []
    for split in EVAL_SPLITS:
        values = [report[c]["ppl"].get(split) for c in cols]
        rows.append([f"{split} ppl", *map(_fmt, values), _change(values[0], values[1])])
    for score in MIA_SCORES:
        values = [report[c]["mia_auc"].get(score) for c in cols]
        delta = "—" if None in values[:2] else f"{values[1] - values[0]:+.3f}"
        rows.append([f"MIA AUC {score}", *map(_fmt, values), delta])
    return header, rows


def format_table(report: Mapping[str, Any]) -> str:
    """The before/after table as aligned plain text, for a terminal."""
    header, rows = _rows(report)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        )

    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    out.append(f"target (approximate-retrain) ppl: {_fmt(report['target_ppl'])}")
    return "\n".join(out)


def verdicts(
    report: Mapping[str, Any], *, ppl_tolerance: float = 0.1, auc_tolerance: float = 0.05
) -> list[str]:
    """One-line judgements: forget ppl vs target, MIA AUC vs 0.5, utility change."""
    lines = []
    target = report["target_ppl"]
    forget = report["after"]["ppl"].get("forget")
    if forget is not None:
        gap = (forget - target) / target
        ok = abs(gap) <= ppl_tolerance
        lines.append(
            f"{'PASS' if ok else 'FAIL'}: forget ppl {forget:.3f} is {gap * 100:+.1f}% from the "
            f"target {target:.3f} (within ±{ppl_tolerance * 100:g}%: {'yes' if ok else 'no'})"
        )
    auc = report["after"]["mia_auc"].get("loss")
    if auc is not None:
        ok = abs(auc - 0.5) <= auc_tolerance
        lines.append(
            f"{'PASS' if ok else 'FAIL'}: loss-MIA AUC {auc:.3f} "
            f"{'is' if ok else 'is not'} within ±{auc_tolerance:g} of 0.5 (chance)"
        )
    for split in ("retain", "general"):
        b, a = report["before"]["ppl"].get(split), report["after"]["ppl"].get(split)
        if b is not None and a is not None:
            lines.append(f"utility: {split} ppl {b:.3f} -> {a:.3f} ({_change(b, a)})")
    return lines


def format_markdown(report: Mapping[str, Any]) -> str:
    """``report.md``: the run, the before/after table, the target and the verdicts."""
    header, rows = _rows(report)
    md = [
        f"# Unlearning report: {report['method']}",
        "",
        f"- model: `{report['model']}`",
        f"- steps: {report['steps']}, time: {report['seconds']:.1f} s",
        f"- target (approximate-retrain) perplexity: **{_fmt(report['target_ppl'])}**",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    md += ["", "## Verdict", ""]
    md += [f"- {v}" for v in verdicts(report)] or ["- no after metrics to judge"]
    md += ["", "![perplexity over steps](perplexity.png)", ""]
    return "\n".join(md)


# ----------------------------------------------------------------------------------- plot
def _history_or_endpoints(
    report: Mapping[str, Any], history: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    history = history or report.get("history")
    if history:
        return list(history)
    return [
        {"step": 0, **report["before"]["ppl"]},
        {"step": report["steps"], **report["after"]["ppl"]},
    ]


def plot_perplexity(
    report: Mapping[str, Any], path: str | os.PathLike, history: list[dict[str, Any]] | None = None
) -> Path:
    """PNG of forget / approximate / retain / general perplexity over steps, target as a line.

    Without a history the plot joins the before (step 0) and after (last step) values. A split
    missing from some history entries (``None``) is drawn dotted through the entries that have
    it, its legend naming those steps.
    """
    # a bare Figure renders with Agg and leaves pyplot's global backend alone
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    points = _history_or_endpoints(report, history)
    fig = Figure(figsize=(7, 4.2), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    for split in EVAL_SPLITS:
        xy = [(p["step"], p.get(split)) for p in points if p.get(split) is not None]
        if xy:
            label, style = split, "-"
            if len(xy) < len(points):  # scored at some steps only (e.g. before and after)
                steps = ", ".join(str(x) for x, _ in xy[:4]) + (", ..." if len(xy) > 4 else "")
                label, style = f"{split} (scored at steps {steps})", ":"
            ax.plot(*zip(*xy), marker="o", markersize=3, linestyle=style, label=label)
    ax.axhline(report["target_ppl"], color="black", linestyle="--", linewidth=1, label="target")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("perplexity")
    ax.set_yscale("log")
    ax.set_title(f"{report['method']}: perplexity per split")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    return final


def write_report(
    report: Mapping[str, Any],
    out_dir: str | os.PathLike,
    history: list[dict[str, Any]] | None = None,
) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and ``perplexity.png`` into ``out_dir`` (each atomically).

    Returns ``{"json": path, "markdown": path, "plot": path}``.
    """
    missing = [k for k in _REQUIRED if k not in report]
    if missing:
        raise ValueError(f"report lacks {missing}; build it with build_report(...)")
    out = Path(out_dir)
    data = dict(report)
    if history and "history" not in data:
        data["history"] = [dict(h) for h in history]
    data = _json_safe(data)
    return {
        "json": atomic_write_json(out / "report.json", data),
        "markdown": atomic_write_text(out / "report.md", format_markdown(data)),
        "plot": plot_perplexity(data, out / "perplexity.png", history),
    }


def _json_safe(value: Any) -> Any:
    """NaN/inf become null (strict JSON), tensors become numbers."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "detach") and getattr(value, "numel", lambda: 0)() == 1:
        value = float(value.detach().cpu().item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
