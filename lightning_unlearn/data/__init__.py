"""Data for unlearning: sources, tokenisation (chunking / packing / question–answer records),
caching and the DataModule."""

from .datamodule import EVAL_SPLIT_ORDER, UnlearningDataModule
from .loaders import ChunkDataset
from .sources import DataSource, QARecord, SourceError, read_documents, read_qa
from .tokenize import (
    PadCollator,
    chunk_documents,
    encode_qa,
    pack_documents,
    qa_documents,
    zlib_length,
)

__all__ = [
    "UnlearningDataModule",
    "DataSource",
    "QARecord",
    "SourceError",
    "read_documents",
    "read_qa",
    "ChunkDataset",
    "PadCollator",
    "chunk_documents",
    "pack_documents",
    "encode_qa",
    "qa_documents",
    "zlib_length",
    "EVAL_SPLIT_ORDER",
]
