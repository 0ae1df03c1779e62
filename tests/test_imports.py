"""What importing one part of tokencompose loads (not timed: which modules end up in ``sys.modules``).

Lightning's floor cannot be avoided by a ``LightningModule`` subclass: ``lightning/pytorch/core/module.py``
(lightning 2.6) does ``from torchmetrics import Metric``, and ``torchmetrics/__init__.py`` (1.9) imports
``torchmetrics.functional`` (which imports torchvision's models and transformers). Everything beyond that floor
is tokencompose's own choice, and is what these tests hold down.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys

import pytest

from tests.recipe_utils import REPO

LAZY_PACKAGES = ["data", "encoders", "eval", "llm", "masks", "projectors", "scalers", "tokenizers"]
# loaded by `import lightning` itself, or never needed by a single component
NEVER_FOR_ONE_COMPONENT = ("lightning.pytorch.cli", "jsonargparse", "open_clip", "timm", "segment_anything",
                           "transformers.models.clip.modeling_clip", "webdataset", "peft")


def modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


@pytest.fixture(scope="module")
def lightning_floor() -> set[str]:
    return modules_after("import lightning")


def test_one_component_loads_lightning_and_its_own_file_only(lightning_floor):
    loaded = modules_after("from tokencompose.tokenizers import PatchPoolTokenizer")
    assert not [m for m in NEVER_FOR_ONE_COMPONENT if m in loaded]
    beyond = {m.split(".")[0] for m in loaded - lightning_floor}
    assert beyond <= {"tokencompose", "einops"}, sorted(beyond)


def test_the_model_does_not_load_the_cli_or_the_optional_front_ends():
    loaded = modules_after("import tokencompose.model")
    assert not [m for m in ("lightning.pytorch.cli", "jsonargparse", "open_clip", "timm", "segment_anything",
                            "transformers.models.clip.modeling_clip") if m in loaded]


def _type_checking_names(package: str) -> dict[str, str]:
    tree = ast.parse((REPO / "tokencompose" / package / "__init__.py").read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING")
    return {alias.name: node.module.rsplit(".", 1)[1] for node in block.body for alias in node.names}


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_lazy_name_resolves_and_type_checkers_see_the_same_names(package):
    module = importlib.import_module(f"tokencompose.{package}")
    assert _type_checking_names(package) == module.EXPORTS
    assert set(module.__all__) >= set(module.EXPORTS) and set(module.__all__) <= set(module.EXPORTS) | {"legrad"}
    for name, submodule in module.EXPORTS.items():
        assert getattr(module, name) is getattr(importlib.import_module(f"tokencompose.{package}.{submodule}"), name)
        assert name in dir(module)
    with pytest.raises(AttributeError, match=f"tokencompose.{package}' has no attribute 'Nope'"):
        module.Nope  # noqa: B018


def test_a_submodule_never_shadows_the_function_of_the_same_name():
    loaded = subprocess.run([sys.executable, "-c", "import tokencompose.masks.legrad\nfrom tokencompose.masks import legrad\n"
                             "print(callable(legrad))"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert loaded.stdout.strip() == "True", loaded.stderr
