"""Data: synthetic shapes, WebDataset shards, per-sample processing, the DataModule."""

from tokencompose.data.annotations import BadSample, ObjectRequirements
from tokencompose.data.datamodule import ShardDataModule, SyntheticShapes
from tokencompose.data.guards import NoSamples
from tokencompose.data.processing import (
    Collator,
    ImageTransform,
    ProcessedSample,
    SampleProcessor,
    pad_to_square,
)
from tokencompose.data.reader import ShardError, ShardProblem, read_shard
from tokencompose.data.shards import decode_sample, iterate_shard, write_shard
from tokencompose.data.sources import Shards, resolve_shards
from tokencompose.data.stream import EpochLoader, ShardStream
from tokencompose.data.synthetic import (
    QUESTION_TYPES,
    ShapesGenerator,
    shapes_text_tokenizer,
    shapes_vocabulary,
)
from tokencompose.data.transform import DataTransform

__all__ = [
    "QUESTION_TYPES",
    "BadSample",
    "Collator",
    "DataTransform",
    "EpochLoader",
    "ImageTransform",
    "NoSamples",
    "ObjectRequirements",
    "ProcessedSample",
    "SampleProcessor",
    "ShapesGenerator",
    "ShardDataModule",
    "ShardError",
    "ShardProblem",
    "ShardStream",
    "Shards",
    "SyntheticShapes",
    "decode_sample",
    "iterate_shard",
    "pad_to_square",
    "read_shard",
    "resolve_shards",
    "shapes_text_tokenizer",
    "shapes_vocabulary",
    "write_shard",
]
