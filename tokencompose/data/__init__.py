"""Data: synthetic shapes, WebDataset shards, per-sample processing, the DataModule."""

from tokencompose.data.datamodule import ShardDataModule, SyntheticShapes
from tokencompose.data.processing import Collator, ImageTransform, SampleProcessor, pad_to_square
from tokencompose.data.shards import decode_sample, iterate_shard, write_shard
from tokencompose.data.stream import EpochLoader, ShardStream
from tokencompose.data.synthetic import (
    QUESTION_TYPES,
    ShapesGenerator,
    shapes_text_tokenizer,
    shapes_vocabulary,
)

__all__ = [
    "QUESTION_TYPES",
    "Collator",
    "EpochLoader",
    "ImageTransform",
    "SampleProcessor",
    "ShapesGenerator",
    "ShardDataModule",
    "ShardStream",
    "SyntheticShapes",
    "decode_sample",
    "iterate_shard",
    "pad_to_square",
    "shapes_text_tokenizer",
    "shapes_vocabulary",
    "write_shard",
]
