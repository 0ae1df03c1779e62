"""``tokencompose plan``: what a recipe costs to train at full size, without weights, network or a GPU."""

from __future__ import annotations

from typing import Any


def plan_command(recipe: list[str], gpu_memory_gib: float = 80.0, peak_tflops: float = 312.0, mfu: float = 0.4,
                 text_tokens: int | None = None, samples: int | None = None, reserved_gib: float = 1.0,
                 json: bool = False) -> None:
    """Parameters, FLOPs per sample, memory per GPU, the largest batch that fits and the time of a recipe's
    training run, for the devices x nodes x strategy x checkpointing x batch its trainer and data settings give.

    The recipe is given as for ``fit`` (``--config RECIPE`` and overrides such as ``--trainer.devices 8``,
    ``--trainer.num_nodes 2``, ``--data.batch_size 8``, ``--trainer.strategy.init_args.activation_checkpointing
    false``); it is built on the meta device. Memory is an upper bound (all gradients and activations live at
    once), checked against measured peaks in benchmarks/RESULTS.md.

    Args:
        gpu_memory_gib: the GPU's memory, e.g. 80 (A100-80GB, H100), 141 (H200).
        peak_tflops: the GPU's dense bf16 peak, e.g. 312 (A100), 989 (H100 SXM).
        mfu: the model FLOPs utilisation assumed for step time and GPU-hours.
        text_tokens: text tokens per sample; the LLM sequence is the recipe's visual tokens + these, at most
            model.max_length (default: model.max_length, the padded bound).
        samples: samples per epoch; default the training data's manifest.json, else max_steps x global batch.
        reserved_gib: memory per GPU outside the model (CUDA context, allocator, communication buffers).
        json: print the plan as JSON instead of a table.
    """
    from tokencompose.planning.plan import plan, to_json

    result = plan(recipe, gpu_memory_gib, peak_tflops, mfu, text_tokens, samples, reserved_gib)
    if json:
        print(to_json(result))
    else:
        render(result)


def _g(flops: float) -> str:
    return f"{flops / 1e12:,.2f}"


def _m(count: int) -> str:
    return f"{count / 1e6:,.1f} M"


def render(result: dict[str, Any]) -> None:
    """The plan as Rich tables: parts, memory per GPU, the verdict and the time."""
    from rich.console import Console
    from rich.table import Table

    setup = result["setup"]
    console = Console(width=120)  # the same table in a terminal, a pipe or a log
    title = (f"{', '.join(result['recipe'])}: {setup['nodes']} node(s) x {setup['devices']} GPU(s), {setup['strategy']}"
             f"{' ' + setup['sharding'] if setup['strategy'] == 'fsdp' else ''}, {setup['precision']}, batch "
             f"{setup['batch_size']} x accumulate {setup['accumulate']} (global {setup['global_batch']}), "
             f"activation checkpointing {'on' if setup['activation_checkpointing'] else 'off'}, "
             f"sequence {setup['sequence_length']}")
    parts = Table(title=title, title_justify="left")
    for column in ("part", "parameters", "trainable", "forward TFLOP", "backward TFLOP", "recomputed TFLOP"):  # per sample
        parts.add_column(column, justify="left" if column == "part" else "right")
    for name, counts in result["parameters"].items():
        flops = result["flops_per_sample"][name]
        parts.add_row(name, _m(counts["total"]), _m(counts["trainable"]), _g(flops["forward"]),
                      _g(flops["backward"]), _g(flops["recomputed"]))
    parts.add_row("per sample", "", "", "", f"model {_g(result['model_flops_per_sample'])}", "", style="bold")
    console.print(parts)
    memory = Table(title=f"memory per GPU (GiB) of {setup['gpu_memory_gib']:g}", title_justify="left")
    for key in ("weights", "gradients", "optimizer", "activations", "reserved", "total"):
        memory.add_column(key, justify="right")
    memory.add_row(*(f"{result['memory_gib'][k]:.2f}" for k in
                     ("weights", "gradients", "optimizer", "activations", "reserved", "total")))
    console.print(memory)
    activations = ", ".join(f"{k.replace('_', ' ')} {v:.2f} GiB" for k, v in result["activations_gib"].items())
    hours = result["gpu_hours_per_epoch"]
    console.print(f"activations: {activations}\n"
                  f"fits: {'yes' if result['fits'] else 'NO'}; largest batch per GPU that fits: {result['largest_batch']}\n"
                  f"step: {result['step_seconds']:.2f} s at MFU {setup['mfu']:g} of {setup['peak_tflops']:g} TFLOP/s; "
                  + (f"epoch of {setup['samples_per_epoch']:,} samples ({setup['samples_source']}): {hours:,.1f} GPU-hours, "
                     f"{hours / setup['world']:,.1f} h on {setup['world']} GPU(s)" if hours is not None
                     else "epoch: give --samples (no manifest, no max_steps)"))
    for note in result["notes"]:
        console.print(f"note: {note}")
