"""The recipe files that ship with tokencompose, wherever it is installed.

An installed wheel carries the repository's ``recipes/`` as ``tokencompose/bundled_recipes`` (``pyproject.toml``,
``force-include``); a source checkout (``uv run``, an editable install) reads ``recipes/`` beside the package. A
recipe is named by its path under that folder without ``.yaml``: ``tiny/mask_llava``, ``annotate/tiny``.

Only the standard library is imported here (``tokencompose recipes list`` never loads torch).
"""

from __future__ import annotations

import shutil
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
SUFFIXES = (".yaml", ".yml")


def recipes_root() -> Path:
    """The folder of the shipped recipes: the installed package's copy, else the source checkout's ``recipes/``."""
    for root in (PACKAGE / "bundled_recipes", PACKAGE.parent / "recipes"):
        if root.is_dir():
            return root
    raise FileNotFoundError(f"no recipes found: neither {PACKAGE / 'bundled_recipes'} (an installed wheel) nor "
                            f"{PACKAGE.parent / 'recipes'} (a source checkout) exists; reinstall tokencompose")


def recipe_name(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def list_recipes() -> list[tuple[str, str]]:
    """(name, the first line of its header) of every shipped recipe, sorted by name."""
    root = recipes_root()
    files = sorted(p for p in root.rglob("*") if p.suffix in SUFFIXES and p.is_file())
    out = []
    for path in files:
        first = next(iter(path.read_text().splitlines()), "")
        out.append((recipe_name(path, root), first.removeprefix("#").strip()))
    return out


def find_recipe(name: str) -> Path:
    """A shipped recipe file, or a folder of them, by name (``tiny/mask_llava``; ``.yaml`` and a leading
    ``recipes/`` are allowed too); FileNotFoundError listing the close names otherwise."""
    root = recipes_root()
    clean = name.strip("/").removeprefix("recipes/")
    for candidate in (root / clean, *(root / f"{clean}{suffix}" for suffix in SUFFIXES)):
        if candidate.exists() and root in (candidate.resolve(), *candidate.resolve().parents):
            return candidate
    stem = Path(clean).stem
    close = [n for n, _ in list_recipes() if stem and stem in n]
    hint = f"; did you mean {', '.join(close[:8])}?" if close else "; `tokencompose recipes list` shows them all"
    raise FileNotFoundError(f"no shipped recipe {name!r}{hint}")


def copy_recipe(name: str, destination: str | Path, overwrite: bool = False) -> list[Path]:
    """Copy a shipped recipe (or a folder of them) to ``destination``: a ``.yaml`` path is the new file's name,
    anything else a folder it goes into. An existing file is kept (an error) unless ``overwrite``."""
    source, destination = find_recipe(name), Path(destination)
    if source.is_dir():
        pairs = [(f, destination / source.name / f.relative_to(source)) for f in sorted(source.rglob("*"))
                 if f.is_file() and f.suffix in SUFFIXES]
    else:
        target = destination if destination.suffix in SUFFIXES else destination / source.name
        pairs = [(source, target)]
    existing = [str(target) for _, target in pairs if target.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"not overwriting {', '.join(existing)} (pass --overwrite to replace)")
    for file, target in pairs:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, target)
    return [target for _, target in pairs]
