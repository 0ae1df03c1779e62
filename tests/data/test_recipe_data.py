"""The full-size recipes name converted directories, which is what `tokencompose data convert-llava` writes."""

import pytest
import yaml

from tests.data.test_convert_llava import fabricate
from tests.recipe_utils import REPO
from tokencompose.data import resolve_shards
from tokencompose.data.convert_llava import convert_llava

FULL_SIZE = sorted((REPO / "recipes").glob("*.yaml")) + [REPO / "recipes/annotate/detr_sam_vit_h.yaml"]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A directory as convert_llava writes it today: shard-NNNNNN.tar (count set by the size) + manifest.json."""
    tmp = tmp_path_factory.mktemp("convert")
    source, images, _ = fabricate(tmp, count=12)
    report = convert_llava(str(source), str(images), str(tmp / "out"), shard_bytes=4000, workers=1)
    return tmp / "out", report


@pytest.mark.parametrize("recipe", FULL_SIZE, ids=lambda p: p.relative_to(REPO / "recipes").as_posix())
def test_full_size_recipe_reads_a_converted_directory(recipe, converted, tmp_path, monkeypatch):
    data = yaml.safe_load(recipe.read_text())["data"]
    spec = data.get("train", data.get("inputs"))
    assert isinstance(spec, str) and "{" not in spec and not spec.endswith(".tar"), spec
    monkeypatch.chdir(tmp_path)  # recipes' data paths are relative to the working directory
    (tmp_path / spec).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / spec).symlink_to(converted[0], target_is_directory=True)
    shards = resolve_shards(spec, "data.train")
    assert len(shards.urls) == converted[1].shards > 1 and shards.samples == converted[1].samples
