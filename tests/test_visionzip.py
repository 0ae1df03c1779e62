"""VisionZip (``VisionZipTokenizer``): equivalences, the official selection and merge, budgets, bad settings.

Expected behaviour re-derived from the official package dvlab-research/VisionZip, PyPI ``visionzip==0.1.3``
(the release the README installs with ``pip install visionzip``): ``visionzip/clip_encoder.py``
(``CLIPVisionTower_VisionZip.forward``), ``visionzip/utils.py`` (``CLIPAttention_forward`` returns the keys averaged
over heads as the merge metric; ``apply_info`` stores it for ``layers[-2]``), ``visionzip/main.py`` (``visionzip``
passes ``dominant - 1`` patches: CLS counts as a dominant token). The stored GitHub copy of the repository
(commit ccb20fe10082d41ee9d454e981d72ff63eda471d) is the demo branch, without the package.
"""

import copy

import pytest
import torch
from torch.testing import assert_close

from tests.conftest import TINY_HF_CLIP, TINY_OPEN_CLIP, build_mask_llava
from tests.recipe_utils import REPO, small_data
from tokencompose.encoders import HFCLIPEncoder, OpenCLIPEncoder
from tokencompose.recipes import TokenComposeCLI
from tokencompose.tokenizers import GlobalTokenizer, PatchPoolTokenizer, VisionZipTokenizer
from tokencompose.tokenizers.visionzip import merge_contextual
from tokencompose.types import EncoderOutput


def official_visionzip(hidden, attention, metric, dominant, contextual):
    """The official ``CLIPVisionTower_VisionZip.forward`` after the tower ran, written out image by image.

    hidden (B, T, D) = ``hidden_states[-2]``; attention (B, H, T, T) = ``attentions[-2]``; metric (B, T, c) =
    ``layers[-2]``'s keys averaged over heads; ``dominant`` as given to ``visionzip()`` (CLS included).
    -> (B, dominant + contextual, D): CLS + top patches in order, then target + mean of the tokens assigned to it.
    """
    out = []
    for b in range(hidden.shape[0]):
        score = attention[b, :, 0, 1:].sum(0)  # summed over heads, patches only
        keep = [0] + sorted((score.topk(dominant - 1).indices + 1).tolist())
        rest = [i for i in range(hidden.shape[1]) if i not in keep]
        normed = metric[b, rest] / metric[b, rest].norm(dim=-1, keepdim=True)
        step = max(1, len(rest) // contextual)
        targets = list(range(0, len(rest), step))[:contextual]
        others = [i for i in range(len(rest)) if i not in targets]
        choice = (normed[others] @ normed[targets].T).argmax(1).tolist()
        merged = []
        for j, target in enumerate(targets):
            members = [rest[others[i]] for i in range(len(others)) if choice[i] == j]
            joined = hidden[b, members].sum(0) / max(1, len(members))
            merged.append(hidden[b, rest[target]] + joined)
        out.append(torch.cat([hidden[b, keep], torch.stack(merged)]))
    return torch.stack(out)


def encoder_of(kind: str, layers: int = 3):
    """A tiny encoder with 3 blocks, so layer -2 is a middle block (open_clip cannot expose block 0's input)."""
    if kind == "hf":
        return HFCLIPEncoder(config=dict(TINY_HF_CLIP, num_hidden_layers=layers))
    vision = dict(TINY_OPEN_CLIP["vision_cfg"], layers=layers)
    return OpenCLIPEncoder(config=dict(TINY_OPEN_CLIP, vision_cfg=vision))


def test_matches_the_official_code_on_hugging_face_clip():
    """Attention from HF's own eager ``output_attentions=True``, keys from a hook on ``layers[-2].self_attn.k_proj``
    (what the official patched ``CLIPAttention_forward`` returns), tokens from ``hidden_states[-2]``."""
    encoder = encoder_of("hf").eval()
    tokenizer = VisionZipTokenizer(dominant=12, contextual=5, layer=-2)
    pixels = torch.randn(3, 3, 64, 64)
    reference = copy.deepcopy(encoder.model)
    reference.set_attn_implementation("eager")
    attn = reference.vision_model.encoder.layers[-2].self_attn
    captured = []
    hook = attn.k_proj.register_forward_hook(lambda module, args, out: captured.append(out))
    with torch.no_grad():
        out = reference(pixel_values=pixels, output_hidden_states=True, output_attentions=True)
        hook.remove()
        metric = captured[0].unflatten(-1, (attn.num_heads, -1)).mean(2)  # (B, T, H, c) -> (B, T, c)
        expected = official_visionzip(out.hidden_states[-2], out.attentions[-2], metric, 12, 5)
        stream = tokenizer(encoder(pixels, tokenizer.encoder_request()))
    assert stream.tokens.shape == (3, 17, encoder.hidden_size) and stream.valid.all()
    assert_close(stream.tokens, expected)


def test_merge_equals_the_official_function_on_a_random_case():
    hidden, metric = torch.randn(4, 1 + 40, 16), torch.randn(4, 1 + 40, 8)
    attention = torch.randn(4, 3, 41, 41).softmax(-1)
    features = EncoderOutput(cls=hidden[:, 0], patches=hidden[:, 1:].unflatten(1, (5, 8)), embedding=hidden[:, 0],
                             cls_attention={-2: attention[:, :, 0, 1:]}, attention_keys={-2: metric})
    for dominant, contextual in [(10, 7), (1, 3), (30, 11), (20, 21)]:  # 21: every remaining token is a target
        tokens = VisionZipTokenizer(dominant=dominant, contextual=contextual)(features).tokens
        assert_close(tokens, official_visionzip(hidden, attention, metric, dominant, contextual))


def hand_case():
    """CLS + 2x4 patches p_i = [i, 1]; the CLS attends most to patches 6 then 1; keys put patches 2, 5, 7 with
    patch 0 and patch 3 with patch 4."""
    patches = torch.tensor([[i, 1.0] for i in range(8)]).view(1, 2, 4, 2)
    heads = [[0.05, 0.3, 0.05, 0.1, 0.1, 0.1, 0.2, 0.1], [0.05, 0.1, 0.05, 0.1, 0.1, 0.1, 0.4, 0.1]]
    attention = torch.tensor(heads)[None]  # (1, 2 heads, 8 patches); summed: p6 0.6, p1 0.4, the rest <= 0.2
    keys = torch.tensor([[5.0, 5.0], [1, 0], [9, 9], [1, 0.1], [0.2, 1], [0, 1], [1, -0.5], [9, 9], [1, 0.2]])[None]
    return EncoderOutput(cls=torch.tensor([[-1.0, -1.0]]), patches=patches, embedding=torch.zeros(1, 2),
                         cls_attention={-2: attention}, attention_keys={-2: keys})


def test_dominant_and_contextual_tokens_on_a_hand_checked_case():
    """Dominant: CLS, p1, p6 (original order). Remaining p0 p2 p3 p4 p5 p7: step 6 // 2 = 3, targets p0 and p4;
    p2, p5, p7 join p0 and p3 joins p4. Contextual = target + mean of the joined: [0, 1] + [14/3, 1] and
    [4, 1] + [3, 1] — not the group means [3.5, 1] and [3.5, 1]."""
    features = hand_case()
    expected = torch.tensor([[-1.0, -1.0], [1, 1], [6, 1], [14 / 3, 2], [7, 2]])
    assert_close(VisionZipTokenizer(dominant=3, contextual=2)(features).tokens[0], expected)
    # without CLS (another stream carries it) the same patches are dominant and merged
    assert_close(VisionZipTokenizer(dominant=2, contextual=2, keep_cls=False)(features).tokens[0], expected[1:])
    assert_close(VisionZipTokenizer(dominant=3, contextual=0)(features).tokens[0], expected[:3])


@pytest.mark.parametrize("kind", ["hf", "open_clip"])
def test_dominant_tokens_are_the_top_summed_cls_attention_patches_in_order(kind):
    """The top-k by the CLS row of ``trace_block``'s attention at layer -2 (summed over heads), CLS first."""
    encoder = encoder_of(kind).eval()
    tokenizer = VisionZipTokenizer(dominant=9, contextual=4, layer=-2)
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = encoder(pixels, tokenizer.encoder_request())
        block = encoder.num_blocks - 2
        trace = encoder.trace_block(block, encoder.block_input(pixels, block))
        stream = tokenizer(features)
    index = trace.attention[:, :, 0, 1:].sum(1).topk(8, dim=1).indices.sort(dim=1).values  # (2, 8)
    assert_close(stream.tokens[:, 0], features.cls)
    assert_close(stream.tokens[:, 1:9], features.patches.flatten(1, 2)[torch.arange(2)[:, None], index])
    assert stream.tokens.shape[1] == tokenizer.num_tokens(encoder) == 13


@pytest.mark.parametrize("kind", ["hf", "open_clip"])
@pytest.mark.parametrize("keep_cls", [True, False])
def test_num_tokens_is_what_forward_returns(kind, keep_cls):
    encoder = encoder_of(kind)
    for dominant, contextual in [(54, 10), (1, 0), (64, 0), (1, 63)]:
        tokenizer = VisionZipTokenizer(dominant=dominant, contextual=contextual, keep_cls=keep_cls)
        with torch.no_grad():
            stream = tokenizer(encoder(torch.randn(2, 3, 64, 64), tokenizer.encoder_request()))
        assert stream.tokens.shape == (2, tokenizer.num_tokens(encoder), encoder.hidden_size)
        assert tokenizer.output_width(encoder) == encoder.hidden_size


def pair(text_tokenizer, reference_tokenizers, visionzip):
    """A composition without VisionZip and one with it, with identical weights."""
    base = build_mask_llava(text_tokenizer, tokenizers=reference_tokenizers, scaler=None).eval()
    other = build_mask_llava(text_tokenizer, tokenizers={"patch": visionzip}, scaler=None).eval()
    other.load_state_dict(base.state_dict())
    return base, other


def test_keeping_every_patch_equals_llava15(text_tokenizer, make_batch):
    base, zipped = pair(text_tokenizer, {"patch": PatchPoolTokenizer(grid=None)},
                        VisionZipTokenizer(dominant=64, contextual=0, keep_cls=False))
    batch = make_batch(base, count=2)
    with torch.no_grad():
        assert_close(zipped(batch)[0], base(batch)[0])
    assert zipped.visual_tokens_per_image() == base.visual_tokens_per_image() == {"patch": 64}


def test_keeping_every_token_equals_cls_then_all_patches(text_tokenizer, make_batch):
    """With the CLS token (official): keeping all 1 + 64 = LLaVA's ``cls_patch`` features, one shared projector."""
    base, zipped = pair(text_tokenizer, {"cls": GlobalTokenizer(), "patch": PatchPoolTokenizer(grid=None)},
                        VisionZipTokenizer(dominant=65, contextual=0))
    batch = make_batch(base, count=2)
    with torch.no_grad():
        assert_close(zipped(batch)[0], base(batch)[0])
        zipped.tokenizers["patch"].dominant, zipped.tokenizers["patch"].contextual = 6, 2  # a test-time budget
        assert zipped.visual_tokens_per_image() == {"patch": 8}
        assert zipped.encode_images(batch.pixels).tokens.shape[1] == 8


def test_bad_settings_fail_at_build_time_naming_the_key(text_tokenizer):
    with pytest.raises(ValueError, match=r"model\.tokenizers\.patch.*dominant=60 \+ contextual=10 > the 65 tokens"):
        build_mask_llava(text_tokenizer, tokenizers={"patch": VisionZipTokenizer(dominant=60, contextual=10)}, scaler=None)
    with pytest.raises(ValueError, match=r"dominant=60 \+ contextual=5 > the 64 tokens there are \(8x8 patches\)"):
        build_mask_llava(text_tokenizer, tokenizers={"patch": VisionZipTokenizer(60, 5, keep_cls=False)}, scaler=None)
    with pytest.raises(ValueError, match=r"model\.tokenizers\.patch.*layer=2: the encoder has 2 blocks"):
        build_mask_llava(text_tokenizer, tokenizers={"patch": VisionZipTokenizer(layer=2, dominant=4)}, scaler=None)
    with pytest.raises(ValueError, match="dominant=0"):
        VisionZipTokenizer(dominant=0)
    with pytest.raises(ValueError, match="contextual=-1"):
        VisionZipTokenizer(contextual=-1)
    with pytest.raises(ValueError, match="contextual=5 targets but only 3"):
        merge_contextual(torch.randn(1, 3, 4), torch.randn(1, 3, 2), 5)


def test_an_input_with_fewer_patches_than_the_budget_is_refused():
    encoder = encoder_of("hf")
    tokenizer = VisionZipTokenizer(dominant=20, contextual=10)
    with pytest.raises(ValueError, match=r"dominant=20 \+ contextual=10 exceed the 17 tokens"):
        tokenizer(encoder(torch.randn(1, 3, 32, 32), tokenizer.encoder_request()))


def test_the_mix_with_object_tokens_sends_cls_visionzip_and_objects(synthetic_root):
    cli = TokenComposeCLI(args=["--config", str(REPO / "recipes" / "tiny" / "mask_llava_visionzip.yaml"),
                                *small_data(synthetic_root)], run=False)
    assert cli.model.visual_tokens_per_image() == {"cls": 1, "patch": 8, "objects": 6}
    assert cli.model.tokenizers["patch"].keep_cls is False  # the CLS token comes once, from the cls stream
