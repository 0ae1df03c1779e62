import pytest
import torch
from torch.testing import assert_close

from tokencompose.tokenizers import GlobalTokenizer, ObjectTokenizer, PatchPoolTokenizer
from tokencompose.types import EncoderOutput, ObjectMasks


def features(batch: int = 2, grid: int = 4, width: int = 6) -> EncoderOutput:
    return EncoderOutput(
        cls=torch.randn(batch, width), patches=torch.randn(batch, grid, grid, width), embedding=torch.randn(batch, 3)
    )


def square_masks(batch: int, corners: list[tuple[int, int, int]], size: int = 16) -> torch.Tensor:
    """Per mask: (x0, y0, side) squares, same for every image."""
    masks = torch.zeros(batch, len(corners), size, size, dtype=torch.bool)
    for i, (x0, y0, side) in enumerate(corners):
        masks[:, i, y0 : y0 + side, x0 : x0 + side] = True
    return masks


def test_global_tokenizer_sources(hf_encoder):
    feats = features()
    cls = GlobalTokenizer("cls")(feats)
    emb = GlobalTokenizer("embedding")(feats)
    assert cls.tokens.shape == (2, 1, 6) and emb.tokens.shape == (2, 1, 3)
    assert_close(cls.tokens[:, 0], feats.cls)
    assert GlobalTokenizer("cls").output_width(hf_encoder) == hf_encoder.hidden_size
    assert GlobalTokenizer("embedding").output_width(hf_encoder) == hf_encoder.embed_dim
    with pytest.raises(ValueError, match="source"):
        GlobalTokenizer("pooled")


def test_patch_pool_identity_all_and_values(hf_encoder):
    feats = features(grid=4)
    assert_close(PatchPoolTokenizer(grid=4)(feats).tokens, feats.patches.flatten(1, 2))
    assert_close(PatchPoolTokenizer(grid=None)(feats).tokens, feats.patches.flatten(1, 2))
    pooled = PatchPoolTokenizer(grid=2)(feats).tokens  # (B, 4, D): top-left token averages the 2x2 corner
    assert pooled.shape == (2, 4, 6)
    assert_close(pooled[:, 0], feats.patches[:, :2, :2].mean((1, 2)))
    maxed = PatchPoolTokenizer(grid=1, mode="max")(feats).tokens
    assert_close(maxed[:, 0], feats.patches.amax((1, 2)))
    assert PatchPoolTokenizer(grid=None).num_tokens(hf_encoder) == hf_encoder.grid_size**2
    assert PatchPoolTokenizer(grid=3).num_tokens(hf_encoder) == 9


def test_object_tokens_ranked_by_score_and_invariant_to_input_order():
    feats = features(batch=1, grid=4)
    masks = square_masks(1, [(0, 0, 4), (8, 8, 8), (4, 0, 4)])
    scores = torch.tensor([[0.2, 0.9, 0.5]])
    objects = ObjectMasks(masks, scores, torch.ones(1, 3, dtype=torch.bool))
    tokenizer = ObjectTokenizer(max_objects=5)
    out = tokenizer(feats, objects)
    assert out.tokens.shape == (1, 5, 6)
    assert out.valid.tolist() == [[True, True, True, False, False]]
    # best first: the mask with score 0.9 covers patches [2:4, 2:4]
    assert_close(out.tokens[0, 0], feats.patches[0, 2:4, 2:4].mean((0, 1)))
    perm = torch.tensor([2, 0, 1])
    shuffled = tokenizer(feats, ObjectMasks(masks[:, perm], scores[:, perm], objects.valid))
    assert_close(shuffled.tokens, out.tokens)
    assert out.tokens[0, 3:].abs().sum() == 0


def test_object_budget_and_iou_pruning_are_test_time_knobs():
    feats = features(batch=1, grid=4)
    masks = square_masks(1, [(0, 0, 8), (0, 0, 7), (8, 8, 8)])  # the first two overlap with IoU 49/64
    objects = ObjectMasks(masks, torch.tensor([[0.9, 0.8, 0.1]]), torch.ones(1, 3, dtype=torch.bool))
    tokenizer = ObjectTokenizer(max_objects=3)
    assert tokenizer(feats, objects).valid.sum() == 3
    tokenizer.iou_threshold = 0.5
    assert tokenizer(feats, objects).valid.sum() == 2
    tokenizer.max_objects = 1
    out = tokenizer(feats, objects)
    assert out.tokens.shape[1] == 1 and out.valid.all()


def test_rank_by_area():
    feats = features(batch=1, grid=4)
    masks = square_masks(1, [(0, 0, 4), (8, 8, 8)])
    objects = ObjectMasks(masks, torch.tensor([[0.9, 0.1]]), torch.ones(1, 2, dtype=torch.bool))
    out = ObjectTokenizer(max_objects=1, rank_by="area")(feats, objects)
    assert_close(out.tokens[0, 0], feats.patches[0, 2:4, 2:4].mean((0, 1)))


def test_no_objects_and_empty_masks_give_no_valid_tokens():
    feats = features(batch=2, grid=4)
    empty = ObjectMasks.empty(2, 16, 16)
    out = ObjectTokenizer(max_objects=3)(feats, empty)
    assert out.tokens.shape == (2, 3, 6) and not out.valid.any()
    blank = ObjectMasks(torch.zeros(2, 2, 16, 16, dtype=torch.bool), torch.ones(2, 2), torch.ones(2, 2, dtype=torch.bool))
    assert not ObjectTokenizer(max_objects=3)(feats, blank).valid.any()
    with_background = ObjectTokenizer(max_objects=3, background=True)(feats, empty)
    assert with_background.valid.tolist() == [[False, False, False, True]] * 2  # the whole image is background
    assert_close(with_background.tokens[:, -1], feats.patches.mean((1, 2)))


def test_object_tokenizer_requires_masks():
    with pytest.raises(ValueError, match="objects"):
        ObjectTokenizer()(features(), None)


def test_stored_mask_inversion_embeddings_are_gathered_best_first(hf_encoder):
    from tokencompose.tokenizers import MaskInversionEmbedding

    feats = features(batch=1, grid=4)
    masks = square_masks(1, [(0, 0, 4), (8, 8, 8), (4, 0, 4)])
    stored = torch.randn(1, 3, 5)
    objects = ObjectMasks(masks, torch.tensor([[0.2, 0.9, 0.5]]), torch.ones(1, 3, dtype=torch.bool), stored)
    out = ObjectTokenizer(embedding=MaskInversionEmbedding(), max_objects=4)(feats, objects)
    assert_close(out.tokens[0, :3], stored[0, [1, 2, 0]])
    assert out.valid.tolist() == [[True, True, True, False]]
    with pytest.raises(ValueError, match="annotate"):
        ObjectTokenizer(embedding=MaskInversionEmbedding())(feats, ObjectMasks(masks, objects.scores, objects.valid))
    with pytest.raises(ValueError, match="background"):
        ObjectTokenizer(embedding=MaskInversionEmbedding(), background=True)


def test_pseudo_inverse_maps_embeddings_into_patch_width(hf_encoder):
    from tokencompose.tokenizers import MaskInversionEmbedding

    embedding = MaskInversionEmbedding(to_patch_width=True)
    assert embedding.encoder_request().inverse_projection  # asked of the encoder on every call, never stored
    assert embedding.output_width(hf_encoder) == hf_encoder.hidden_size
    projection = hf_encoder.projection_matrix()  # (Dv, De)
    hidden = torch.randn(3, hf_encoder.hidden_size)
    projected = hidden @ projection  # an embedding that is the projection of a hidden vector
    feats = features(batch=1, grid=4, width=hf_encoder.hidden_size)
    feats.inverse_projection = hf_encoder(torch.randn(1, 3, 64, 64), embedding.encoder_request()).inverse_projection
    mapped, _ = embedding(feats, torch.ones(1, 3, 4, 4, dtype=torch.bool), projected[None])
    assert_close(mapped[0] @ projection, projected, atol=1e-4, rtol=1e-4)  # projecting back recovers it


def test_objects_are_oversampled_in_training_and_cut_at_test():
    feats = features(batch=1, grid=4)
    masks = square_masks(1, [(0, 0, 4), (8, 8, 8), (4, 0, 4), (12, 12, 4)])
    objects = ObjectMasks(masks, torch.rand(1, 4), torch.ones(1, 4, dtype=torch.bool))
    tokenizer = ObjectTokenizer(max_objects=2, train_max_objects=4)
    tokenizer.train()
    assert tokenizer(feats, objects).tokens.shape[1] == 4
    tokenizer.eval()
    assert tokenizer(feats, objects).tokens.shape[1] == 2
