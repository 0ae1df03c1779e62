import pytest
import torch

from tests.conftest import build_mask_llava
from tokencompose.optimization import Optimization, warmup_cosine
from tokencompose.projectors import LinearProjector
from tokencompose.tokenizers import GlobalTokenizer, PatchPoolTokenizer
from tokencompose.types import ObjectMasks


def test_visual_budget_and_sequence(mask_llava, make_batch):
    assert mask_llava.visual_tokens_per_image() == {"cls": 1, "patch": 4, "objects": 4}
    batch = make_batch(mask_llava, count=3)
    visual = mask_llava.encode_images(batch.pixels, batch.objects)
    assert visual.tokens.shape == (3, 9, mask_llava.llm.hidden_size)
    assert visual.kinds == ("cls", "patch", "objects")
    assert visual.kind.tolist() == [0, 1, 1, 1, 1, 2, 2, 2, 2]
    counts = batch.objects.valid.sum(1).clamp(max=4)
    assert visual.valid[:, 5:].sum(1).tolist() == counts.tolist()


def test_a_few_steps_overfit_a_batch(mask_llava, make_batch):
    batch = make_batch(mask_llava, count=4)
    optimizer = torch.optim.AdamW([p for p in mask_llava.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(15):
        _, loss = mask_llava(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.grad is None for p in mask_llava.encoder.parameters())  # frozen encoder


def test_images_without_objects_still_train(mask_llava, make_batch):
    batch = make_batch(mask_llava, count=2)
    batch.objects = ObjectMasks.empty(2, 64, 64)
    _, loss = mask_llava(batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert mask_llava.projectors["shared"].layers[0].weight.grad is not None


def test_test_time_budget_changes_without_retraining(mask_llava, make_batch):
    batch = make_batch(mask_llava, count=2)
    mask_llava.eval()
    mask_llava.tokenizers["patch"].grid = 1
    mask_llava.tokenizers["objects"].max_objects = 2
    assert sum(mask_llava.visual_tokens_per_image().values()) == 4
    assert mask_llava.encode_images(batch.pixels, batch.objects).tokens.shape[1] == 4


def test_shared_projector_width_mismatch_is_reported(text_tokenizer):
    with pytest.raises(ValueError, match="shared_projector"):
        build_mask_llava(text_tokenizer, tokenizers={"cls": GlobalTokenizer("embedding"), "patch": PatchPoolTokenizer()})
    model = build_mask_llava(
        text_tokenizer,
        tokenizers={"cls": GlobalTokenizer("embedding"), "patch": PatchPoolTokenizer(grid=2)},
        shared_projector=False,
        projector=LinearProjector,
    )
    assert model.projectors["cls"].in_dim == 32 and model.projectors["patch"].in_dim == 64


def test_per_part_learning_rates(text_tokenizer):
    with pytest.raises(ValueError, match="projector"):
        build_mask_llava(text_tokenizer, optimization=Optimization(learning_rates={"projector": 1e-3}))
    model = build_mask_llava(text_tokenizer, optimization=Optimization(lr=1e-4, learning_rates={"projectors": 1e-2}))

    class FakeTrainer:
        estimated_stepping_batches = 100

    model._trainer = FakeTrainer()  # configure_optimizers only reads the schedule length
    groups = {g["name"]: g["lr"] for g in model.configure_optimizers()["optimizer"].param_groups}
    assert groups == {"projectors": 1e-2 * warmup_cosine(0, 100, 0.03), "llm": 1e-4 * warmup_cosine(0, 100, 0.03)}


def test_warmup_cosine_shape():
    values = [warmup_cosine(s, 100, 0.1) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[-1] < 0.01 and all(a >= b for a, b in zip(values[10:], values[11:], strict=False))


def test_online_annotator_with_no_objects_gives_the_background_token_only_and_trains(text_tokenizer, make_batch):
    from tokencompose.masks import GroundTruthMasks, MaskInversionSettings, MaskPostprocess, ObjectAnnotator
    from tokencompose.tokenizers import MaskInversionEmbedding, ObjectTokenizer

    model = build_mask_llava(
        text_tokenizer,
        tokenizers={"cls": GlobalTokenizer(), "patch": PatchPoolTokenizer(grid=2),
                    "objects": ObjectTokenizer(MaskInversionEmbedding(to_patch_width=True), max_objects=3)},
        object_source=ObjectAnnotator(GroundTruthMasks(MaskPostprocess(background=True)), MaskInversionSettings(iterations=2)),
    )
    batch = make_batch(model, count=2)
    batch.objects = None  # images without any object
    visual = model.encode_images(batch.pixels, batch.objects)
    assert visual.valid[:, 5:].sum(1).tolist() == [1, 1]  # the background mask is the only object
    _, loss = model(batch)
    loss.backward()
    assert torch.isfinite(loss)


def test_validation_encodes_each_batch_once(mask_llava, make_batch):
    calls = []
    hook = mask_llava.encoder.register_forward_hook(lambda *_: calls.append(1))
    mask_llava.log = lambda *args, **kwargs: None
    mask_llava.eval()
    with torch.no_grad():
        mask_llava.validation_step(make_batch(mask_llava, count=2), 0)
    hook.remove()
    assert len(calls) == 1  # the loss and the generated answers share one encoding


def test_budgets_do_not_depend_on_the_module_mode(text_tokenizer):
    """The test-time budget sizes validate/predict/eval, the training budget sizes fit, in either module mode."""
    from tokencompose.tokenizers import ObjectTokenizer

    model = build_mask_llava(text_tokenizer, tokenizers={
        "cls": GlobalTokenizer(), "patch": PatchPoolTokenizer(grid=2), "objects": ObjectTokenizer(max_objects=2, train_max_objects=8)})
    for mode in (True, False):
        model.train(mode)
        assert model.visual_tokens_per_image() == {"cls": 1, "patch": 4, "objects": 2}
        assert model.visual_tokens_per_image(training=True) == {"cls": 1, "patch": 4, "objects": 8}
        assert model.conversation_encoder().visual_tokens_per_image == 7
        assert model.conversation_encoder(training=True).visual_tokens_per_image == 13
