"""The data module's settings, checked in one place: :class:`DataConfig` (the numbers and switches)
and :func:`resolve_sources` (which source feeds which training set and evaluation split).

:class:`~lightning_unlearn.data.UnlearningDataModule` documents every argument; this module only
holds them and refuses bad combinations, naming the argument and the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .sources import DataSource

__all__ = ["DataConfig", "resolve_sources"]


def _check_int(name: str, value: object, low: int, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        bound = f">= {low} or None" if optional else f">= {low}"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")


@dataclass
class DataConfig:
    """The data module's hyper-parameters (see :class:`UnlearningDataModule` for each one),
    validated on construction."""

    max_length: int = 512
    min_chunk_tokens: int = 5
    packing: bool = False
    alternate_parts: bool = False
    windows_per_document: int | None = None
    batch_size: int = 4
    retain_per_forget: int = 1
    retain_batch_size: int | None = None
    eval_batch_size: int = 8
    cache_dir: str | None = None
    num_workers: int = 0
    seed: int = 0
    shuffle: bool = True
    gguf_file: str | None = None
    trust_remote_code: bool = False
    max_documents: int | None = None
    system_prompt: str | None = None
    eval_subset: int | None = None

    def __post_init__(self) -> None:
        for name, low in (
            ("max_length", 2),
            ("min_chunk_tokens", 1),
            ("batch_size", 1),
            ("retain_per_forget", 1),
            ("eval_batch_size", 1),
            ("num_workers", 0),
        ):
            _check_int(name, getattr(self, name), low)
        _check_int("windows_per_document", self.windows_per_document, 1, optional=True)
        _check_int("retain_batch_size", self.retain_batch_size, 1, optional=True)
        if self.retain_batch_size is not None and self.retain_per_forget != 1:
            raise ValueError(
                f"retain_batch_size={self.retain_batch_size} and retain_per_forget="
                f"{self.retain_per_forget} both set the retain batch: keep one (retain_per_forget: 1 "
                "with retain_batch_size, or retain_batch_size: null)"
            )
        if self.packing and self.windows_per_document is not None:
            raise ValueError(
                "packing=True lays documents end to end, so a window is not a document's: set "
                "windows_per_document: null, or packing: false"
            )
        for name in ("max_documents", "eval_subset"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value!r}")
        self.alternate_parts = bool(self.alternate_parts)

    @property
    def retain_batch(self) -> int:
        """Retain windows per training batch: ``retain_batch_size``, or ``batch_size *
        retain_per_forget``."""
        if self.retain_batch_size is not None:
            return self.retain_batch_size
        return self.batch_size * self.retain_per_forget


def _coerce(value: str | DataSource | None) -> DataSource | None:
    return None if value is None else DataSource.coerce(value)


def resolve_sources(
    config: DataConfig,
    *,
    forget: str | DataSource | None,
    retain: str | DataSource | None = None,
    approximate: str | DataSource | None = None,
    eval_forget: str | DataSource | None = None,
    eval_retain: str | DataSource | None = None,
    general: str | DataSource | None = None,
    eval_splits: Sequence[str] | str | None = None,
) -> tuple[dict[str, DataSource], dict[str, DataSource]]:
    """``(train_sources, eval_sources)``: the training ``forget`` (and ``retain``) sets and the
    evaluation splits present (``eval_forget`` / ``eval_retain`` default to the training sets),
    restricted to ``eval_splits`` when given. Refuses a missing forget source, ``alternate_parts``
    without parts, ``packing`` of question–answer data and ``eval_splits`` without a source."""
    if forget is None:
        raise ValueError("a forget source is required: pass forget='path/to/forget.jsonl'")
    train: dict[str, DataSource] = {"forget": DataSource.coerce(forget)}
    if config.alternate_parts and train["forget"].parts is None:
        raise ValueError(
            f"alternate_parts=True needs a forget source with parts (forget: {{parts: [...]}}); "
            f"forget {train['forget'].describe()} has one part"
        )
    if retain is not None:
        train["retain"] = DataSource.coerce(retain)
    if config.packing:
        qa = [f"{k} {v.describe()}" for k, v in train.items() if v.is_qa]
        if qa:
            raise ValueError(
                f"packing=True cannot be used with question–answer source(s) {', '.join(qa)}: "
                "each record is one row whose prompt is masked out of the labels. Set "
                "packing: false (or drop question_column to train on the text as documents)"
            )
    candidates = {
        "forget": _coerce(eval_forget) or train["forget"],
        "approximate": _coerce(approximate),
        "retain": _coerce(eval_retain) or train.get("retain"),
        "general": _coerce(general),
    }
    evaluation = {k: v for k, v in candidates.items() if v is not None}
    if eval_splits is None:
        return train, evaluation
    if isinstance(eval_splits, str):
        eval_splits = [eval_splits]
    unknown = [name for name in eval_splits if name not in candidates]
    if unknown:
        raise ValueError(
            f"eval_splits: unknown split(s) {unknown}; choose from {sorted(candidates)}"
        )
    missing = [name for name in eval_splits if name not in evaluation]
    if missing:
        raise ValueError(
            f"eval_splits asks for {missing} but no source was given for them: pass "
            f"{' / '.join(missing)}=... or leave them out of eval_splits"
        )
    return train, {k: v for k, v in evaluation.items() if k in eval_splits}
