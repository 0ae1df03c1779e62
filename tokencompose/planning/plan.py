"""Recipe arguments (``--config RECIPE`` + ``--trainer.*`` / ``--data.*`` overrides) -> a training plan: the
recipe built on the meta device (no weights, no network), its parts costed (``recipe_costs``), the run read
from the parsed trainer and data settings, the numbers from ``cost_model``."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from tokencompose.planning.cost_model import (
    GiB,
    RunSetup,
    Strategy,
    flops_per_sample,
    gpu_hours_per_epoch,
    largest_batch,
    memory_per_gpu,
    step_seconds,
)
from tokencompose.planning.recipe_costs import largest_unit_bytes, vlm_part_costs

# Lightning's registered strategy names the planner costs -> how the cost model shards (auto: DDP on many devices)
STRATEGY_NAMES: dict[str, Strategy] = {"auto": "ddp", "fsdp": "fsdp", "ddp": "ddp", "ddp_spawn": "ddp",
                                       "ddp_find_unused_parameters_true": "ddp", "single_device": "single"}
FSDP_PATHS = ("tokencompose.strategies.fsdp", "lightning.pytorch.strategies.FSDPStrategy")


def _int(value: Any, key: str) -> int:
    if isinstance(value, str) and value.isdigit():  # Lightning types devices as int | str | list
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"plan: {key}={value!r}; give a positive count (e.g. --{key} 8)")
    return value


def run_setup(config: Any, model: Any) -> RunSetup:
    """The parsed recipe (``trainer``, ``data``) -> devices x nodes, strategy, batch, checkpointing."""
    trainer = config.trainer
    devices = 1 if trainer.devices in ("auto", None) and trainer.accelerator == "cpu" else trainer.devices
    devices, nodes = _int(devices, "trainer.devices"), _int(trainer.num_nodes, "trainer.num_nodes")
    strategy, sharding, checkpointing = "ddp", "FULL_SHARD", False
    class_path = getattr(trainer.strategy, "class_path", None)
    if isinstance(trainer.strategy, str):
        if trainer.strategy not in STRATEGY_NAMES:
            raise ValueError(f"plan: trainer.strategy={trainer.strategy!r} is not costed; the planner knows the names "
                             f"{sorted(STRATEGY_NAMES)} and the class paths {list(FSDP_PATHS)}")
        strategy = STRATEGY_NAMES[trainer.strategy]
    elif class_path in FSDP_PATHS:
        args = trainer.strategy.init_args
        strategy, sharding = "fsdp", getattr(args, "sharding_strategy", "FULL_SHARD")
        checkpointing = bool(getattr(args, "activation_checkpointing", False) or
                             getattr(args, "activation_checkpointing_policy", None))
    elif class_path is not None:
        raise ValueError(f"plan: trainer.strategy.class_path={class_path!r} is not costed; the planner knows "
                         f"{list(FSDP_PATHS)} and the names {sorted(STRATEGY_NAMES)}")
    if devices * nodes == 1 and strategy == "ddp":
        strategy = "single"
    checkpointing |= bool(getattr(config.model.llm.init_args, "gradient_checkpointing", False))
    return RunSetup(devices=devices, nodes=nodes, strategy=strategy, sharding=sharding,
                    batch_size=_int(config.data.batch_size, "data.batch_size"),
                    accumulate=_int(trainer.accumulate_grad_batches or 1, "trainer.accumulate_grad_batches"),
                    activation_checkpointing=checkpointing, largest_unit_bytes=largest_unit_bytes(model))


def manifest_samples(train: Any) -> int | None:
    """Samples listed by the training data's ``manifest.json`` (a converted directory), if there is one."""
    if not isinstance(train, str) or not (Path(train) / "manifest.json").is_file():
        return None
    from tokencompose.data.sources import read_manifest

    return sum(read_manifest(Path(train), "data.train").values())


def plan(recipe: list[str], gpu_memory_gib: float = 80.0, peak_tflops: float = 312.0, mfu: float = 0.4,
         text_tokens: int | None = None, samples: int | None = None, reserved_gib: float = 1.0) -> dict[str, Any]:
    """The plan as a JSON-ready dict (see ``tokencompose.commands.plan.plan_command`` for the arguments)."""
    from tokencompose.recipes import build_recipe

    cli = build_recipe(recipe, meta=True)
    model, config = cli.model, cli.config
    visual = sum(model.visual_tokens_per_image(training=True).values())
    if text_tokens is not None and text_tokens < 0:
        raise ValueError(f"plan: text_tokens={text_tokens}; give the text tokens per sample (>= 0)")
    length = model.max_length if text_tokens is None else min(visual + text_tokens, model.max_length)
    parts = vlm_part_costs(model, length)
    notes = [f"sequence length {length} tokens per sample: " + (
        f"{visual} visual + {text_tokens} text (given), at most model.max_length" if text_tokens is not None else
        "model.max_length, every sample padded to it: a bound on memory and time (give --text_tokens for a typical "
        "sample; the data manifest counts samples, not tokens)")]
    if any(p.name == "mask_front_end" for p in parts):
        notes.append("the online mask front end's MaskInversion steps are not modelled: its FLOPs and memory are "
                     "those of its weights only")
    elif model.data_transform().objects.masks:
        notes.append("object masks and embeddings come with the data (`tokencompose annotate`, offline): the mask "
                     "front end is paid once per image, not per step")
    setup = run_setup(config, model)
    source = "given"
    if samples is None:
        samples = manifest_samples(config.data.train)
        source = "data.train manifest.json"
    if samples is None and (config.trainer.max_steps or 0) > 0:
        samples = config.trainer.max_steps * setup.batch_size * setup.accumulate * setup.world
        source = "trainer.max_steps x global batch"
    setup = replace(setup, gpu_memory_gib=gpu_memory_gib, peak_tflops=peak_tflops, mfu=mfu,
                    reserved_gib=reserved_gib, samples_per_epoch=samples or 0)
    flops = flops_per_sample(parts, setup.activation_checkpointing)
    memory = memory_per_gpu(parts, setup)
    other = memory_per_gpu(parts, replace(setup, activation_checkpointing=not setup.activation_checkpointing))
    return {
        "recipe": [recipe[i + 1] for i, a in enumerate(recipe[:-1]) if a == "--config"],
        "setup": {**asdict(setup), "world": setup.world, "global_batch": setup.batch_size * setup.accumulate * setup.world,
                  "precision": str(config.trainer.precision), "sequence_length": length, "samples_source": source},
        "parameters": {p.name: {"total": p.parameters, "trainable": p.trainable} for p in parts},
        "visual_tokens_per_image": model.visual_tokens_per_image(training=True),
        "flops_per_sample": {p.name: {"forward": flops.forward[p.name], "backward": flops.backward[p.name],
                                      "recomputed": flops.recomputed[p.name]} for p in parts},
        "model_flops_per_sample": flops.model,
        "memory_gib": {**{k: v / GiB for k, v in asdict(memory).items()}, "total": memory.total / GiB},
        "activations_gib": {("with" if setup.activation_checkpointing else "without") + "_checkpointing": memory.activations / GiB,
                            ("without" if setup.activation_checkpointing else "with") + "_checkpointing": other.activations / GiB},
        "fits": memory.total <= gpu_memory_gib * GiB,
        "largest_batch": largest_batch(parts, setup),
        "step_seconds": step_seconds(flops.model, setup),
        "gpu_hours_per_epoch": gpu_hours_per_epoch(flops.model, setup) if samples else None,
        "notes": notes,
    }


def to_json(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2)
