"""The score cache (``--score_cache``): measurements of fixed checkpoints and the before-measurement
of ``fit``, kept on disk by the *content* of what they measured.

A measurement's file is named by the SHA-256 of the model's weight files, every evaluation split
(:func:`~lightning_unlearn.data.cache.splits_fingerprint`: token ids and texts), the metrics, whether
generation ran, the package version and the caller's ``extra`` (the before-measurement's dtype and
LoRA), never by names or dates: a second run on the same bytes reads it back, any change misses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .data.cache import splits_fingerprint
from .data.protocol import UnlearningData
from .evaluation.base import UnlearningMetric
from .io import atomic_write_json, content_fingerprint
from .measuring import Measurement
from .version import __version__

log = logging.getLogger(__name__)

__all__ = ["MeasurementCache"]


class MeasurementCache:
    """Measurements kept in ``folder`` (``None``: nothing is kept), keyed on content.

    The fingerprint of a data module's evaluation splits hashes every window; it is computed once
    per data module (and its ``eval_subset``), not once per lookup.

    Args:
        folder: where the measurements (and the weight files' hashes) are kept.
        verbose: log a before-measurement read back.
    """

    def __init__(self, folder: str | Path | None = None, *, verbose: bool = True) -> None:
        self.folder = None if folder is None else Path(folder)
        self.verbose = verbose
        #: where the last :meth:`read_before` looked (``None``: nowhere)
        self.before_file: Path | None = None
        self._fingerprints: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __getstate__(self) -> dict[str, Any]:  # the memo holds weak references: not pickled
        return {**self.__dict__, "_fingerprints": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _fingerprints=weakref.WeakKeyDictionary())

    def fingerprint(self, datamodule: UnlearningData) -> str:
        """:func:`~lightning_unlearn.data.cache.splits_fingerprint` of ``datamodule``, memoised."""
        stamp = (
            tuple(getattr(datamodule, "eval_split_names", ())),
            getattr(datamodule, "eval_subset", None),
        )
        try:
            known = self._fingerprints.get(datamodule)
        except TypeError:  # not weakly referable: computed every time
            return splits_fingerprint(datamodule)
        if known is None or known[0] != stamp:
            known = self._fingerprints[datamodule] = (stamp, splits_fingerprint(datamodule))
        return known[1]

    def path(
        self,
        model: str,
        datamodule: UnlearningData,
        metrics: Sequence[UnlearningMetric],
        generation: bool = True,
        **extra: Any,
    ) -> Path | None:
        """Where the measurement of the model at ``model`` on ``datamodule`` with ``metrics`` is
        kept; ``None`` without a folder or for a model that is no local file or folder (a hub
        id)."""
        if self.folder is None:
            return None
        weights = content_fingerprint(model, memo=self.folder / "file-hashes.json")
        if weights is None:
            return None
        key = json.dumps(
            [
                weights,
                self.fingerprint(datamodule),
                [m.describe() for m in metrics],
                generation,
                extra,
                __version__,
            ],
            sort_keys=True,
            default=str,
        )
        return self.folder / f"scores-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"

    @staticmethod
    def read(path: Path | None) -> Measurement | None:
        """The measurement kept at ``path`` (``None``: none there)."""
        if path is None or not path.is_file():
            return None
        return Measurement.from_json(json.loads(path.read_text()))

    @staticmethod
    def write(path: Path | None, measurement: Measurement) -> None:
        if path is not None:
            atomic_write_json(path, measurement.to_json())

    def read_before(
        self,
        module: Any,
        datamodule: UnlearningData,
        metrics: Sequence[UnlearningMetric],
        processes: int = 1,
    ) -> Measurement | None:
        """``fit``'s before-measurement of ``module`` (its weights as loaded: the file, the dtype,
        LoRA) on ``datamodule`` kept by an earlier run, else ``None``; :attr:`before_file` is
        where it is (or goes: ``None`` for a module without a path, or with several
        ``processes``: every rank must take the same decision)."""
        self.before_file = None
        path = getattr(module, "model_name_or_path", None)
        if self.folder is None or path is None or processes > 1:
            return None
        gguf = getattr(module, "gguf_file", None)
        source = str(Path(path) / gguf) if gguf else str(path)
        self.before_file = self.path(
            source,
            datamodule,
            metrics,
            kind="before",
            dtype=getattr(module, "dtype_name", None),
            lora=getattr(module, "lora", None) is not None,
        )
        before = self.read(self.before_file)
        if before is not None and self.verbose:
            log.info(
                "before: reused the measurement in %s (same weights, data and metrics)",
                self.before_file,
            )
        return before
