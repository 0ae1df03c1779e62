"""``tokencompose recipes list`` and ``tokencompose recipes copy``: the recipes that ship with the package."""

from __future__ import annotations


def list_command() -> list[str]:
    """List the shipped recipes (name and what it is); copy one with `tokencompose recipes copy NAME DEST`."""
    from tokencompose.recipe_files import list_recipes, recipes_root

    recipes = list_recipes()
    width = max(len(name) for name, _ in recipes)
    print(f"recipes in {recipes_root()}:")
    for name, summary in recipes:
        print(f"  {name:<{width}}  {summary}")
    return [name for name, _ in recipes]


def copy_command(name: str, destination: str, overwrite: bool = False) -> list[str]:
    """Copy a shipped recipe (or a folder of them, e.g. `tiny`) to edit or run from any directory:
    `tokencompose recipes copy NAME DEST`.

    Args:
        name: the recipe, as `tokencompose recipes list` names it (e.g. tiny/mask_llava).
        destination: a .yaml path for the copy, or a folder to copy it into.
        overwrite: replace files that exist.
    """
    from tokencompose.recipe_files import copy_recipe

    written = [str(path) for path in copy_recipe(name, destination, overwrite)]
    for path in written:
        print(path)
    return written
