"""``tokencompose``: one entry point for every command.

``fit``, ``validate``, ``test`` and ``predict`` are LightningCLI over a recipe. The tools (``eval``, ``sweep``,
``data ...``, ``demo``, ...) are typed functions whose parsers jsonargparse builds from their signatures and
docstrings. The tools that read a recipe take it as ``fit`` does: ``--config RECIPE`` (repeatable) and inline
overrides (``--model.tokenizers.patch.grid 3``); the checkpoint flag is ``--ckpt_path`` everywhere.

Nothing heavy is imported here: ``tokencompose --help`` and a tool's ``--help`` never load torch.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

LIGHTNING_COMMANDS = {
    "fit": "train a recipe (resume with --ckpt_path)",
    "validate": "loss and answer accuracy on the validation split",
    "test": "the same on the test split (the validation shards unless data.val says otherwise)",
    "predict": "greedy answers for the predict split",
}
RECIPE_PREFIXES = ("--config", "--model.", "--data.", "--trainer.", "--seed_everything")


@dataclass(frozen=True)
class Tool:
    """A command backed by a typed function ``module:function``; ``summary`` is its line in ``--help``."""

    target: str
    summary: str

    def function(self) -> Callable[..., Any]:
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)


TOOLS: dict[str, Tool] = {
    "eval": Tool("tokencompose.commands.evaluation:eval_command", "a trained recipe on benchmarks: scores, predictions, server files"),
    "sweep": Tool("tokencompose.commands.evaluation:sweep_command", "one checkpoint x a grid of test-time budgets: table and plots"),
    "annotate": Tool("tokencompose.cli:annotate", "object masks + MaskInversion embeddings for shards, offline (--config RECIPE)"),
    "fitprune": Tool("tokencompose.commands.fitprune:fitprune_command",
                     "fit a FitPrune deletion schedule to a FLOPs budget, as a file for the recipe"),
    "plan": Tool("tokencompose.commands.plan:plan_command",
                 "what a recipe costs to train: FLOPs, memory per GPU, largest batch, GPU-hours (meta build)"),
    "demo": Tool("tokencompose.commands.demo:demo", "the main job: train two tiny schemes on synthetic shapes, compare them"),
    "ask": Tool("tokencompose.commands.ask:ask", "one question about one image from a trained checkpoint"),
    "explore": Tool("tokencompose.commands.explore:explore",
                    "a web page: what a checkpoint keeps, costs and answers as its budget moves (extra `app`)"),
    "export": Tool("tokencompose.commands.export:export_command",
                   "a trained LLaVA-1.5-shaped checkpoint -> a Hugging Face LLaVA folder with a model card"),
}
DATA_TOOLS: dict[str, Tool] = {
    "convert-llava": Tool("tokencompose.commands.data:convert_llava_command", "LLaVA JSON + images -> WebDataset shards"),
    "convert-benchmark": Tool("tokencompose.commands.data:convert_benchmark_command",
                              "a benchmark's release files -> shards"),
}
RECIPE_TOOLS: dict[str, Tool] = {
    "list": Tool("tokencompose.commands.recipes:list_command", "the recipes that ship with tokencompose"),
    "copy": Tool("tokencompose.commands.recipes:copy_command", "copy a shipped recipe (NAME DEST) to edit it"),
}
GROUPS: dict[str, dict[str, Tool]] = {"data": DATA_TOOLS, "recipes": RECIPE_TOOLS}


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("tokencompose")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def overview() -> str:
    lines = ["usage: tokencompose <command> [options]    (tokencompose <command> --help for its options)", "",
             "Compose the visual tokens a vision-language model feeds its LLM; train, evaluate and sweep recipes.", "",
             "recipe commands (LightningCLI: --config RECIPE, inline --model.* / --data.* / --trainer.* overrides):"]
    lines += [f"  {name:<26}{summary}" for name, summary in LIGHTNING_COMMANDS.items()]
    lines += ["", "tools:"]
    lines += [f"  {name:<26}{tool.summary}" for name, tool in TOOLS.items()]
    lines += [f"  {group} {name:<{25 - len(group)}}{tool.summary}" for group, tools in GROUPS.items()
              for name, tool in tools.items()]
    lines += ["", "options:", "  -h, --help                show this list and exit", "  --version                 print the version"]
    return "\n".join(lines)


def split_recipe_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """argv -> (recipe arguments: --config and --model.* / --data.* / --trainer.* overrides with their values,
    the tool's own arguments)."""
    recipe, own = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith(RECIPE_PREFIXES) and arg != "--config_help":
            takes_value = "=" not in arg and i + 1 < len(argv)
            recipe += argv[i : i + 2] if takes_value else [arg]
            i += 2 if takes_value else 1
        else:
            own.append(arg)
            i += 1
    return recipe, own


def _list_parameters(function: Callable[..., Any]) -> set[str]:
    hints = typing.get_type_hints(function)
    return {name for name, hint in hints.items() if list in (typing.get_origin(hint), *map(typing.get_origin, typing.get_args(hint)))}


def _bool_parameters(function: Callable[..., Any]) -> set[str]:
    return {name for name, hint in typing.get_type_hints(function).items() if hint is bool}


def bare_flags(argv: list[str], flags: set[str]) -> list[str]:
    """``--flag`` of a bool parameter given without a value (last, or before another option) -> ``--flag true``."""
    out = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if arg.removeprefix("--") in flags and (i + 1 == len(argv) or argv[i + 1].startswith("--")):
            out.append("true")
    return out


def run_tool(name: str, tool: Tool, argv: list[str]) -> Any:
    """Parse ``argv`` for ``tool``'s function (options repeat for list parameters: ``--benchmark a --benchmark b``)
    and call it; a function with a ``recipe`` parameter gets the recipe arguments split off first."""
    from jsonargparse import ArgumentParser

    function = tool.function()
    takes_recipe = "recipe" in inspect.signature(function).parameters
    recipe, own = split_recipe_args(argv) if takes_recipe else ([], argv)
    lists = _list_parameters(function) - {"recipe"}
    own = [f"{arg}+" if arg.removeprefix("--") in lists else arg for arg in own]  # repeated options append
    own = bare_flags(own, _bool_parameters(function))  # --json as well as --json true
    summary = (inspect.getdoc(function) or "").split("\n\n")[0]
    epilog = ("The recipe is given as for `tokencompose fit`: --config RECIPE (repeatable) and inline overrides "
              "such as --model.tokenizers.patch.grid 3.") if takes_recipe else None
    parser = ArgumentParser(prog=f"tokencompose {name}", description=summary, epilog=epilog)
    parser.add_function_arguments(function, as_group=False, skip={"recipe"})
    options = vars(parser.parse_args(own))
    return function(recipe=recipe, **options) if takes_recipe else function(**options)


def _positional(tool: Tool, argv: list[str]) -> list[str]:
    """``recipes copy NAME DEST`` as ``tune cp`` takes it: leading bare words fill the function's required
    parameters in order (``--name NAME --destination DEST`` works too)."""
    required = [p.name for p in inspect.signature(tool.function()).parameters.values()
                if p.default is inspect.Parameter.empty and p.name != "recipe"]
    words = list(itertools.takewhile(lambda a: not a.startswith("-"), argv))
    if not words or len(words) > len(required):
        return argv
    return [a for name, word in zip(required[: len(words)], words, strict=True) for a in (f"--{name}", word)] + argv[len(words):]


def annotate(recipe: list[str]) -> list[Any]:
    """Object masks and MaskInversion embeddings for every sample of the input shards, written as new shards.

    Give an annotate recipe: --config recipes/annotate/NAME.yaml (and inline --model.* / --data.* overrides).
    """
    from tokencompose.annotate import summary
    from tokencompose.recipes import AnnotateCLI

    cli = AnnotateCLI(args=recipe)
    reports = cli.trainer.predict(cli.model, datamodule=cli.datamodule, return_predictions=True) or []
    print(summary(reports))
    return reports


def main(argv: list[str] | None = None) -> Any:
    """Run one command; weights that cannot be loaded and missing files end it with the error's message (the
    recipe key or flag, the path, the fetch command), not a traceback."""
    from tokencompose.hub import WeightsUnavailable

    try:
        return dispatch(sys.argv[1:] if argv is None else list(argv))
    except (WeightsUnavailable, FileNotFoundError) as error:
        print(f"tokencompose: {error}", file=sys.stderr)
        sys.exit(1)


def console() -> None:
    """The ``tokencompose`` script and ``python -m tokencompose``: ``main`` without its return value, which
    ``sys.exit`` would print and turn into exit status 1 (a finished fit or ask must exit 0)."""
    main()


def dispatch(argv: list[str]) -> Any:
    command = argv[0] if argv else "--help"
    if command in ("-h", "--help"):
        print(overview())
        return None
    if command == "--version":
        print(f"tokencompose {version()}")
        return None
    if command in LIGHTNING_COMMANDS:
        from tokencompose.recipes import TokenComposeCLI

        return TokenComposeCLI(args=argv)
    if command == "annotate" and any(a in ("-h", "--help", "--print_config") for a in argv[1:]):
        from tokencompose.recipes import AnnotateCLI

        return AnnotateCLI(args=argv[1:])  # LightningCLI's own help for the annotate job
    if command in TOOLS:
        return run_tool(command, TOOLS[command], argv[1:])
    if command in GROUPS:
        tools, sub = GROUPS[command], argv[1] if len(argv) > 1 else "--help"
        if sub in tools:
            return run_tool(f"{command} {sub}", tools[sub], _positional(tools[sub], argv[2:]))
        lines = [f"  {command} {name:<{25 - len(command)}}{tool.summary}" for name, tool in tools.items()]
        print(f"usage: tokencompose {command} <command> [options]\n\n" + "\n".join(lines))
        return None if sub in ("-h", "--help") else sys.exit(2)
    print(f"tokencompose: unknown command {command!r}\n\n{overview()}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
