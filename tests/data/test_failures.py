"""When no sample can be produced, loading stops at once with one error naming the cause; invalid settings
fail at build time naming the key; repeated warnings are rate-limited."""

import contextlib
import logging
import signal

import pytest

from tests.data.conftest import attached
from tests.recipe_utils import REPO, small_data
from tokencompose.data import NoSamples, ShardDataModule, ShardStream, SyntheticShapes, write_shard

LLAVA15 = REPO / "recipes" / "tiny" / "llava15.yaml"


@contextlib.contextmanager
def within(seconds: int):
    """Fail instead of hanging: the code before these fixes looped forever here."""

    def expired(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def corrupt_shards(folder, count=3):
    folder.mkdir(exist_ok=True)
    for i in range(count):
        (folder / f"bad-{i}.tar").write_bytes(b"not a tar at all" * 64)
    return f"{folder}/bad-{{0..{count - 1}}}.tar"


def records_logged(caplog) -> int:
    return sum(1 for r in caplog.records if r.name.startswith("tokencompose.data"))


@pytest.mark.parametrize("mode", ["resampled", "exact"])
@pytest.mark.parametrize("workers", [0, 2])
def test_every_shard_corrupt_stops_the_first_pass_with_one_error(tmp_path, patch_model, mode, workers, caplog):
    extra = {"train_batches_per_epoch": 5} if mode == "resampled" else {}
    data = attached(patch_model, train=corrupt_shards(tmp_path), train_mode=mode, num_workers=workers, **extra)
    with within(60), pytest.raises(NoSamples, match=r"no usable sample: .*3 shard\(s\).*corrupt tar: \d"):
        list(data.train_dataloader())  # before: resampled looped forever, exact gave empty epochs
    assert records_logged(caplog) < 20


def test_every_sample_too_long_stops_naming_max_length(synthetic_root, patch_model, caplog):
    data = attached(patch_model, synthetic=SyntheticShapes(str(synthetic_root), 96, 32, 32))
    data.train_processor.conversations.max_length = 20  # above the 4 visual tokens, below any question
    with within(60), pytest.raises(NoSamples, match="sequence too long: .*Check: model.max_length"):
        list(data.train_dataloader())
    assert records_logged(caplog) < 10  # 3 skips logged, one "more are counted" line


def test_max_length_below_the_visual_tokens_fails_at_attach(patch_model):
    patch_model.max_length = 4  # 2x2 patch tokens: nothing else fits
    with pytest.raises(ValueError, match="model.max_length=4 leaves no room for text after the 4 visual tokens"):
        attached(patch_model)


def test_a_shard_good_once_keeps_resampled_training_going(tmp_path, synthetic_root, patch_model):
    """The no-sample proof is sound: one good shard among corrupt ones is enough (no false alarm)."""
    bad = corrupt_shards(tmp_path, 4)
    data = attached(patch_model, train=[bad, str(synthetic_root / "train-000000.tar")], train_batches_per_epoch=20,
                    batch_size=8, shuffle_buffer=64)
    assert len(list(data.train_dataloader())) == 20


def test_repeated_warnings_are_rate_limited(tmp_path, synthetic_root, datamodule_processor, caplog):
    from tokencompose.data import iterate_shard

    good = next(iterate_shard(str(synthetic_root / "val-000000.tar")))
    write_shard(tmp_path / "many.tar", [{"__key__": f"b{i}", "png": b"junk", "json": good["json"]} for i in range(500)]
                + [{k: v for k, v in good.items() if k != "__url__"}])
    stream = ShardStream([str(tmp_path / "many.tar")], datamodule_processor, batch_size=1, shuffle=False)
    with caplog.at_level(logging.WARNING):
        assert len(list(stream)) == 1
    assert stream.skipped == {"corrupt image": 500} and records_logged(caplog) == 4  # 3 in full + 1 "more..."


@pytest.mark.parametrize("settings, key", [
    ({"batch_size": 0}, "data.batch_size=0"),
    ({"batch_size": -2}, "data.batch_size=-2"),
    ({"num_workers": -1}, "data.num_workers=-1"),
    ({"shuffle_buffer": 0}, "data.shuffle_buffer=0"),
    ({"train_batches_per_epoch": 0}, "data.train_batches_per_epoch=0"),
    ({"train_mode": "random"}, "data.train_mode='random'"),
    ({"train_mode": "exact", "train_batches_per_epoch": 4}, "data.train_batches_per_epoch is for train_mode 'resampled'"),
])
def test_invalid_data_settings_fail_at_build_naming_the_key(settings, key):
    with pytest.raises(ValueError, match=key.replace("(", r"\(").replace(")", r"\)")):
        ShardDataModule(**settings)


@pytest.mark.parametrize("field, value", [("samples_per_shard", 0), ("train_samples", 0), ("val_samples", -1),
                                          ("image_size", 4)])
def test_invalid_synthetic_settings_fail_naming_the_key(field, value):
    with pytest.raises(ValueError, match=f"data.synthetic: {field}={value}"):
        SyntheticShapes(**{field: value})


@pytest.mark.parametrize("override, message", [
    (["--data.batch_size", "0"], "data.batch_size=0"),
    (["--data.synthetic.samples_per_shard", "0"], "data.synthetic: samples_per_shard=0"),
    (["--model.max_length", "40"], "model.max_length=40 leaves no room for text"),  # fails when the model is built
])
def test_invalid_settings_fail_when_the_cli_builds_the_recipe(synthetic_root, override, message):
    from tokencompose.recipes import TokenComposeCLI

    with pytest.raises((ValueError, SystemExit)) as error:
        TokenComposeCLI(args=["--config", str(LLAVA15), *small_data(synthetic_root), *override], run=False)
    assert message in str(error.value) or message in str(error.value.__context__)


@pytest.mark.slow
@pytest.mark.parametrize("override, error, message", [
    (["--data.train", "{tmp}/nowhere"], ValueError, r"data.train: 1 of 1 shard\(s\) do not exist"),
    (["--data.train", "{bad}", "--data.train_batches_per_epoch", "4"], NoSamples, "corrupt tar"),
    (["--data.train", "{bad}", "--data.train_mode", "exact"], NoSamples, "corrupt tar"),
], ids=["missing-directory", "corrupt-resampled", "corrupt-exact"])
def test_fit_stops_at_once_naming_the_cause(synthetic_root, tmp_path, override, error, message, caplog):
    from tokencompose.recipes import TokenComposeCLI

    bad = corrupt_shards(tmp_path / "bad")
    args = [a.format(tmp=tmp_path, bad=bad) for a in override]
    cli = TokenComposeCLI(args=["--config", str(LLAVA15), *small_data(synthetic_root), "--trainer.max_steps", "3",
                                "--trainer.enable_checkpointing", "false", *args], run=False)
    with within(120), pytest.raises(error, match=message):
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 0 and records_logged(caplog) < 20
