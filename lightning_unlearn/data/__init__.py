"""Data for unlearning: sources, tokenisation (chunking / packing), caching and the DataModule."""

from .datamodule import EVAL_SPLIT_ORDER, ChunkDataset, UnlearningDataModule
from .sources import DataSource, SourceError, read_documents
from .tokenize import PadCollator, chunk_documents, pack_documents, zlib_length

__all__ = [
    "UnlearningDataModule",
    "DataSource",
    "SourceError",
    "read_documents",
    "ChunkDataset",
    "PadCollator",
    "chunk_documents",
    "pack_documents",
    "zlib_length",
    "EVAL_SPLIT_ORDER",
]
