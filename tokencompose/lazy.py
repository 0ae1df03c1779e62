"""Package namespaces that import a submodule when one of its names is first used (PEP 562 ``__getattr__``).

``from tokencompose.tokenizers import PatchPoolTokenizer`` then loads ``tokenizers/patch_pool.py`` and what it
imports, not every other tokenizer's dependencies (open_clip and timm, segment_anything, transformers' model
classes). Each package lists its names once, in ``EXPORTS``; its ``if TYPE_CHECKING:`` block imports the same
names for type checkers and editors (a test keeps the two equal).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``package``'s module ``__getattr__`` and ``__dir__`` for ``exports`` ({name: submodule it lives in})."""

    def __getattr__(name: str) -> Any:
        submodule = exports.get(name)
        if submodule is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{submodule}"), name)
        setattr(sys.modules[package], name, value)  # later look-ups find it without __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__
