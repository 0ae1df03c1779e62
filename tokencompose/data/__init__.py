"""Data: synthetic shapes, WebDataset shards, per-sample processing, the DataModule."""

from typing import TYPE_CHECKING

from tokencompose.lazy import lazy_exports

if TYPE_CHECKING:
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

EXPORTS = {
    "BadSample": "annotations",
    "ObjectRequirements": "annotations",
    "ShardDataModule": "datamodule",
    "SyntheticShapes": "datamodule",
    "NoSamples": "guards",
    "Collator": "processing",
    "ImageTransform": "processing",
    "ProcessedSample": "processing",
    "SampleProcessor": "processing",
    "pad_to_square": "processing",
    "ShardError": "reader",
    "ShardProblem": "reader",
    "read_shard": "reader",
    "decode_sample": "shards",
    "iterate_shard": "shards",
    "write_shard": "shards",
    "Shards": "sources",
    "resolve_shards": "sources",
    "EpochLoader": "stream",
    "ShardStream": "stream",
    "QUESTION_TYPES": "synthetic",
    "ShapesGenerator": "synthetic",
    "shapes_text_tokenizer": "synthetic",
    "shapes_vocabulary": "synthetic",
    "DataTransform": "transform",
}
__all__ = [
    "BadSample",
    "Collator",
    "DataTransform",
    "EpochLoader",
    "ImageTransform",
    "NoSamples",
    "ObjectRequirements",
    "ProcessedSample",
    "QUESTION_TYPES",
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
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
