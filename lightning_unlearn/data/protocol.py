"""What the workflow, its measurements and the score cache read of a data module:
:class:`UnlearningData`.

:class:`~lightning_unlearn.data.UnlearningDataModule` is the implementation; a data module of
one's own that has these members can be measured, checked and reported on the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..evaluation.base import SplitTexts
    from .sources import DataSource

__all__ = ["UnlearningData"]


@runtime_checkable
class UnlearningData(Protocol):
    """The data module's contract with the workflow.

    Attributes:
        train_sources: the training sets' sources by role (``"forget"``, ``"retain"``); the
            model card hashes the forget documents.
        eval_sources: the evaluation splits' sources by name.
        check_splits: the splits validation scores during ``fit`` (``None``: all); the
            workflow sets it to the split its stop reads.
        eval_subset: at most this many windows of each split are scored (``None``: all).
        cache_dir: where tokenised splits are kept (``None``: the default); the score cache
            goes beside it.
    """

    train_sources: Mapping[str, DataSource]
    eval_sources: Mapping[str, DataSource]
    check_splits: tuple[str, ...] | None
    eval_subset: int | None
    cache_dir: str | None

    @property
    def eval_split_names(self) -> tuple[str, ...]:
        """The evaluation splits present, in evaluation order."""
        ...

    @property
    def tokenizer(self) -> Any:
        """The tokenizer the windows were cut with (generation metrics decode with it)."""
        ...

    def eval_dataset(self, split: str) -> Any:
        """The tokenised split (a ``datasets.Dataset``: ``input_ids``, ``text``, ``doc_index``)."""
        ...

    def eval_loaders(self, splits: Sequence[str] | None = None) -> Any:
        """Loaders of ``splits`` (``None``: every split) whose batches carry ``"split"`` and
        ``"doc_index"``, sharded over the processes."""
        ...

    def eval_texts(self, split: str, *, documents: int | None = None) -> SplitTexts:
        """Each document's first window of ``split`` (its token ids and text)."""
        ...
