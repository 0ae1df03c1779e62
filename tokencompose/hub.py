"""Pretrained weights from disk or the Hugging Face hub: fail at once, say which recipe key asked and how to fetch.

``from_pretrained`` with a hub name and no network retries every file five times with backoff (about a minute
per file, several files per model) before it fails with a message that names neither the model's recipe key nor
a way out. Here a hub name is first looked up in the local cache and, unless ``HF_HUB_OFFLINE`` is set, the hub
is asked once (no retries, 10 s at most); a name that cannot be loaded raises ``WeightsUnavailable`` then. The
component does not know its recipe key: the recipe loader adds it (``with_keys``), finding the keys whose value
is the name.

Nothing heavy is imported at module level (the command line imports this for its error type).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
PROBE_TIMEOUT_S = 10.0

# The Segment Anything release (facebookresearch/segment-anything README, "Model Checkpoints", @ 13ea663).
SAM_CHECKPOINT_URLS = {
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
    "default": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
}


class WeightsUnavailable(OSError):
    """Pretrained weights a part needs are neither on disk, in the local hub cache, nor reachable.

    ``component`` is the part that asked (``HFCLIPEncoder``), ``name`` what it was given (a hub name or a path),
    ``fetch`` the command that gets it beforehand; ``keys`` the recipe keys holding ``name`` once the recipe
    loader knows them.
    """

    def __init__(self, component: str, name: str, reason: str, fetch: str, hub: bool = True,
                 keys: Sequence[str] = ()) -> None:
        self.component, self.name, self.reason, self.fetch, self.hub, self.keys = component, name, reason, fetch, hub, tuple(keys)
        super().__init__(self.message())

    def message(self) -> str:
        asked = f"{' and '.join(self.keys)} = {self.name!r}" if self.keys else repr(self.name)
        lines = [f"{asked}: {self.component} cannot load it: {self.reason}",
                 f"Fetch it beforehand (where there is network): {self.fetch}"]
        if self.hub:
            lines.append("Then HF_HUB_OFFLINE=1 makes every load read the local cache only (no network is tried); "
                         "or point the key at a local folder.")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.message()

    def __reduce__(self) -> Any:  # picklable across processes (DDP ranks, loader workers)
        return (WeightsUnavailable, (self.component, self.name, self.reason, self.fetch, self.hub, self.keys))

    def with_keys(self, keys: Sequence[str]) -> WeightsUnavailable:
        return WeightsUnavailable(self.component, self.name, self.reason, self.fetch, self.hub, keys)


def hub_fetch_command(repo_id: str) -> str:
    return f"hf download {repo_id}   (huggingface_hub < 1.0: huggingface-cli download {repo_id})"


def is_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _is_repo_id(name: str) -> bool:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _cached(repo_id: str) -> bool:
    """Whether the local hub cache holds a snapshot of ``repo_id`` (no network)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot_download(repo_id, local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError):
        return False
    return True


def _hub_problem(repo_id: str) -> str | None:
    """None when the hub answers for ``repo_id``; else why not. One request, no retries."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    try:
        HfApi().model_info(repo_id, timeout=PROBE_TIMEOUT_S)
    except RepositoryNotFoundError:
        return (f"the hub ({constants.ENDPOINT}) has no model {repo_id!r}, or it is private or gated "
                "(log in first: hf auth login)")
    except HfHubHTTPError as error:
        return f"the hub ({constants.ENDPOINT}) refused it: {error}"
    except Exception as error:  # noqa: BLE001 - any transport failure (DNS, refused, TLS, timeout) means the same
        return f"the hub ({constants.ENDPOINT}) cannot be reached ({type(error).__name__}: {error})"
    return None


def check_access(component: str, name: str) -> bool:
    """Raise ``WeightsUnavailable`` now if ``name`` (a local path or a hub name) cannot be loaded; return whether
    only the local cache may serve it (offline, or the hub unreachable with a cached copy)."""
    if Path(name).expanduser().exists():
        return False
    if not _is_repo_id(name):
        raise WeightsUnavailable(component, name, "no such local file or folder (and it is not a hub name)",
                                 f"hf download REPO --local-dir {name}", hub=False)
    cached = _cached(name)
    if is_offline():
        if cached:
            return True
        raise WeightsUnavailable(component, name, "HF_HUB_OFFLINE is set and the local hub cache does not hold it "
                                 "(nor is it a local folder)", hub_fetch_command(name))
    problem = _hub_problem(name)
    if problem is None:
        return False
    if cached:
        log.warning("%s %r: %s; using the local cache (HF_HUB_OFFLINE=1 skips this check)", component, name, problem)
        return True
    raise WeightsUnavailable(component, name, f"not a local folder, not in the local hub cache, and {problem}",
                             hub_fetch_command(name))


@contextmanager
def unavailable_as_error(component: str, name: str, fetch: str | None = None, hub: bool = True) -> Iterator[None]:
    """A load that fails for a missing or unreadable file (``OSError``) -> ``WeightsUnavailable``."""
    try:
        yield
    except WeightsUnavailable:
        raise
    except OSError as error:
        reason = " ".join(str(error).split())  # transformers' messages span several lines
        raise WeightsUnavailable(component, name, reason, fetch or hub_fetch_command(name), hub=hub) from error


def from_pretrained(component: str, name: str, load: Callable[..., T], **kwargs: Any) -> T:
    """``load(name, **kwargs)`` (a ``from_pretrained``) for a local folder or a hub name, checked first
    (``check_access``): no minute of retries before an error that says what to do."""
    local_only = check_access(component, name)
    with unavailable_as_error(component, name):
        return load(name, local_files_only=local_only, **kwargs)
