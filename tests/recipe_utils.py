"""Helpers for running recipes in tests: parse-only CLI and small synthetic-data overrides."""

from __future__ import annotations

from pathlib import Path

from tokencompose.recipes import AnnotateCLI, ParseOnlyCLI, TokenComposeCLI  # noqa: F401 (ParseOnlyCLI is shared)

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted(r for r in (REPO / "recipes").rglob("*.yaml") if not {"overlays", "annotate"} & set(r.parts))
ANNOTATE_RECIPES = sorted((REPO / "recipes" / "annotate").glob("*.yaml"))
TINY_RECIPES = [r for r in RECIPES if "tiny" in r.parts]
OVERLAYS = sorted((REPO / "recipes").rglob("overlays/*.yaml"))


def overlay_base(overlay: Path) -> Path:
    """The base recipe an overlay names in its header (``# Base: recipes/...``)."""
    for line in overlay.read_text().splitlines():
        if line.startswith("# Base:"):
            return REPO / line.split(":", 1)[1].strip()
    raise ValueError(f"{overlay}: no '# Base:' line in the header")



class ParseOnlyAnnotateCLI(AnnotateCLI):
    def instantiate_classes(self) -> None:
        return None


def small_data(root: Path) -> list[str]:
    return [
        "--data.synthetic.root", str(root), "--data.synthetic.train_samples", "96",
        "--data.synthetic.val_samples", "32", "--data.synthetic.samples_per_shard", "32",
        "--data.num_workers", "0", "--trainer.logger", "false",
        "--trainer.default_root_dir", str(root / "runs"), "--trainer.callbacks", "[]",
    ]
