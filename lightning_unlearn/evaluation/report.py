"""The unlearning report: ``report.json``, ``report.md`` and ``perplexity.png``.

``report.json`` holds whatever metrics were configured; nothing here lists metric names::

    {"model": str, "method": str, "steps": int, "seconds": float, "target_ppl": float,
     "columns": ["before", "after", ...],          # plus e.g. "pretrained", "exact_retrain",
     "before": {"forget/ppl": x, "mia/loss_auc": x, ...},     # "compare": the same flat values
     "after": {...},
     "documents": {"before": {"forget": {"doc_index": [...], "ppl": [...], ...}, ...},
                   "after": {...}},                 # per document, where a metric has them
     "metrics": [{"class": ..., options...}, ...],   # the configured metrics
     "rows": [{"key": "forget/ppl", "label": "forget ppl", "metric": "Perplexity",
               "change": "+59.7%"}, ...],           # the table, in the metrics' order
     "verdict": ["PASS: ...", ...],
     "history": [{"step": 0, "forget": ppl, ...}, ...]}      # the stopping checks (the plot)

Values that could not be computed are ``null`` (strict JSON).
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..io import atomic_write_json, atomic_write_text
from .base import UnlearningMetric, finite
from .metrics import EVAL_SPLITS, default_metrics
from .results import approximate_target, normalise_metrics

__all__ = [
    "build_report",
    "write_report",
    "format_table",
    "format_markdown",
    "format_markdown_table",
    "plot_perplexity",
]

_REQUIRED = ("model", "method", "steps", "seconds", "before", "after", "target_ppl")
#: documents listed per split in report.md (report.json has them all)
MARKDOWN_DOCUMENTS = 12


def _flat(metrics: Any) -> dict[str, float | None]:
    return {key: finite(value) for key, value in normalise_metrics(metrics).items()}


def _rows(
    metrics: Sequence[UnlearningMetric], sections: Mapping[str, Mapping[str, float | None]]
) -> list[dict[str, str]]:
    """The table's rows: each metric's values (as any column has them), in the metrics' order;
    values no configured metric owns come last, labelled by their key."""
    rows, seen = [], set()
    keys = list(dict.fromkeys(k for section in sections.values() for k in section))
    for metric in metrics:
        for key in [k for k in keys if k not in seen and metric.owns(k)]:
            seen.add(key)
            label = metric.label(key)
            if label is None:
                continue
            before, after = sections["before"].get(key), sections["after"].get(key)
            rows.append(
                {"key": key, "label": label, "metric": metric.name,
                 "change": metric.change(before, after)}
            )  # fmt: skip
    rows += [{"key": k, "label": k, "metric": "", "change": "—"} for k in keys if k not in seen]
    return rows


def build_report(
    *,
    model: str,
    method: str,
    steps: int,
    seconds: float,
    before: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    after: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    target_ppl: float | None = None,
    columns: Mapping[str, Mapping[str, Any]] | None = None,
    documents: Mapping[str, Mapping[str, Mapping[str, list]]] | None = None,
    metrics: Sequence[UnlearningMetric] | None = None,
    history: list[dict[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the report dict (see the module docstring for its shape).

    Args:
        model: the unlearned model's name or path.
        method: the unlearning method's name (e.g. ``"GradientAscentDescent"``).
        steps: optimizer steps taken.
        seconds: wall-clock seconds of unlearning.
        before: values of the original model (flat metric dict or ``trainer.validate`` output).
        after: values of the unlearned model, same forms.
        target_ppl: the approximate-retrain target; ``None`` takes ``before``'s approximate
            perplexity.
        columns: more models side by side (``{"exact_retrain": values, "pretrained": values}``).
        documents: per column (``"before"``, ``"after"``, ...), per split, per-document values
            (``{"doc_index": [...], "<value>": [...]}``).
        metrics: the metrics that produced the values (their labels, changes and verdicts);
            default: the default metrics.
        history: the stopping checks (``UnlearningWorkflow.history``).
        extra: more top-level keys (must not replace the ones above).

    Raises:
        EmptyApproximateSplitError: no target given and ``before`` has no approximate perplexity.
    """
    target = approximate_target(before) if target_ppl is None else float(target_ppl)
    if not math.isfinite(target) or target <= 0:
        approximate_target({"approximate/ppl": target})  # raises the clear empty-split message
    metrics = list(default_metrics() if metrics is None else metrics)
    sections = {"before": _flat(before), "after": _flat(after)}
    for name, values in (columns or {}).items():
        if name in sections:
            raise ValueError(f"column {name!r} would replace the report's own {name!r}")
        sections[name] = _flat(values)
    report: dict[str, Any] = {
        "model": str(model),
        "method": str(method),
        "steps": int(steps),
        "seconds": float(seconds),
        "target_ppl": target,
        "columns": list(sections),
        **sections,
        "metrics": [m.describe() for m in metrics],
    }
    report["rows"] = _rows(metrics, sections)
    if documents:
        report["documents"] = {col: dict(splits) for col, splits in documents.items()}
    report["verdict"] = [line for m in metrics for line in m.verdict(report)]
    report["sections"] = [section for m in metrics for section in m.sections(report)]
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


def _table(report: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    columns = list(report.get("columns") or ["before", "after"])
    header = ["metric", *columns, "after vs before"]
    rows = []
    for row in report.get("rows", []):
        values = [_fmt((report.get(c) or {}).get(row["key"])) for c in columns]
        rows.append([row["label"], *values, row["change"]])
    return header, rows


def format_table(report: Mapping[str, Any]) -> str:
    """The before/after table as aligned plain text, for a terminal."""
    header, rows = _table(report)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        )

    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    out.append(f"target (approximate-retrain) ppl: {_fmt(report['target_ppl'])}")
    return "\n".join(out)


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


#: the per-document columns report.md shows (name in ``documents``, heading), after ``ppl``
DOCUMENT_COLUMNS = (
    ("mia/loss", "loss attack"),
    ("mia_ref/reference", "reference attack"),
    ("memorisation/exact", "exact memorisation"),
)


def _median(values: Sequence[float]) -> float | None:
    finite_values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return float(statistics.median(finite_values)) if finite_values else None


def _value(values: Mapping[str, Sequence], name: str, i: int) -> float | None:
    column = values.get(name) or []
    v = column[i] if i < len(column) else None
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _document_table(report: Mapping[str, Any], split: str = "forget") -> list[str]:
    """Which forget documents the model still knows: per document its perplexity before and
    after, the after perplexity over the unseen (``approximate``) split's median perplexity under
    the original model (below 1: still easier than unseen text), and after unlearning the loss
    and reference attacks' scores and exact memorisation. At most eight columns, the documents
    most recognisable first; every per-document column of every split is in report.json and
    ``documents.csv``."""
    documents = report.get("documents") or {}
    before, after = (documents.get(c, {}).get(split) or {} for c in ("before", "after"))
    if "ppl" not in after:
        return []
    unseen = _median((documents.get("before", {}).get("approximate") or {}).get("ppl", []))
    index = list(after["doc_index"])
    position = {d: i for i, d in enumerate(before.get("doc_index", []))}
    shown = [(n, h) for n, h in DOCUMENT_COLUMNS if n in after]
    # per-document targets (``UnlearningWorkflow(documents=DocumentTargeting())``): beside the value after
    targets = (documents.get("targets") or {}).get(split) or {}
    target_of = dict(zip(targets.get("doc_index", []), targets.get("target ppl", [])))
    header = ["document", "ppl before", "ppl after"]
    header += ["target ppl"] if target_of else []
    header += ["after / unseen median", *(f"{h} (after)" for _, h in shown)]
    rows = []
    for i, doc in enumerate(index):
        ppl_before = _value(before, "ppl", position[doc]) if doc in position else None
        ppl_after = _value(after, "ppl", i)
        ratio = None if ppl_after is None or not unseen else ppl_after / unseen
        cells = [ppl_before, ppl_after, *([target_of.get(doc)] if target_of else [])]
        cells += [ratio, *(_value(after, n, i) for n, _ in shown)]
        rows.append((math.inf if ratio is None else ratio, str(doc), cells))
    rows.sort(key=lambda r: r[0])
    body = [[doc, *(_fmt(c) for c in cells)] for _, doc, cells in rows[:MARKDOWN_DOCUMENTS]]
    out = ["", f"### {split}: {len(index)} documents, the most recognisable first", ""]
    out += _markdown_table(header, body)
    if len(rows) > MARKDOWN_DOCUMENTS:
        out.append(f"\n({len(rows) - MARKDOWN_DOCUMENTS} more, and every column of every split, "
                   "in documents.csv and report.json)")  # fmt: skip
    else:
        out.append("\n(every column of every split in documents.csv and report.json)")
    return out


def format_documents_csv(report: Mapping[str, Any]) -> str:
    """Every per-document value of the report as CSV: one row per (split, document), one column
    per (value, report column), e.g. ``ppl (before)``."""
    import csv
    import io

    documents = report.get("documents") or {}
    splits = list(dict.fromkeys(s for col in documents.values() for s in col))
    names = list(dict.fromkeys(
        f"{n} ({c})" for c, per_split in documents.items() for values in per_split.values()
        for n in values if n != "doc_index"
    ))  # fmt: skip
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["split", "document", *names])
    for split in splits:
        cells: dict[Any, dict[str, Any]] = {}
        for column, per_split in documents.items():
            values = per_split.get(split)
            if not values:
                continue
            for i, doc in enumerate(values.get("doc_index", [])):
                row = cells.setdefault(doc, {})
                for n, column_values in values.items():
                    if n != "doc_index" and i < len(column_values):
                        row[f"{n} ({column})"] = column_values[i]
        for doc, row in cells.items():
            writer.writerow([split, doc, *("" if row.get(n) is None else row[n] for n in names)])
    return buffer.getvalue()


def format_markdown_table(report: Mapping[str, Any]) -> str:
    """The report's table as markdown."""
    return "\n".join(_markdown_table(*_table(report)))


def format_markdown(report: Mapping[str, Any]) -> str:
    """``report.md``: the run, the table, the target, the verdicts and per-document values."""
    header, rows = _table(report)
    md = [
        f"# Unlearning report: {report['method']}",
        "",
        f"- model: `{report['model']}`",
        f"- steps: {report['steps']}, time: {report['seconds']:.1f} s",
        f"- target (approximate-retrain) perplexity: **{_fmt(report['target_ppl'])}**",
        *(
            [
                f"- before: reused from `{report['before_reused']}` (the same weights, data and "
                "metrics measured by an earlier run)"
            ]
            if report.get("before_reused")
            else []
        ),
        "",
        *_markdown_table(header, rows),
        "",
        "## Verdict",
        "",
    ]
    md += [f"- {v}" for v in report.get("verdict", [])] or ["- no after metrics to judge"]
    for section in report.get("sections", []):
        md += ["", f"## {section['title']}", "", section["markdown"]]
    per_document = _document_table(report)
    if per_document:
        md += ["", "## Per document", *per_document]
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
        {"step": 0, **{s: report["before"].get(f"{s}/ppl") for s in EVAL_SPLITS}},
        {"step": report["steps"], **{s: report["after"].get(f"{s}/ppl") for s in EVAL_SPLITS}},
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
    """Write ``report.json``, ``report.md``, ``documents.csv`` (every per-document value) and
    ``perplexity.png`` into ``out_dir`` (each atomically).

    Returns ``{"json": path, "markdown": path, "documents": path, "plot": path}``.
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
        "documents": atomic_write_text(out / "documents.csv", format_documents_csv(data)),
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
