import torch
from torch.testing import assert_close

from tokencompose.llm import IGNORE_INDEX, IMAGE_TOKEN_ID, fuse_visual_tokens


def reference_fuse(input_ids, embeds, mask, visual, valid, labels):
    """Straightforward per-sample loop: splice the valid visual tokens in, drop invalid ones, right-pad."""
    rows, row_labels, image = [], [], 0
    for b in range(input_ids.shape[0]):
        parts, labs = [], []
        for t in range(input_ids.shape[1]):
            if not mask[b, t]:
                continue
            if input_ids[b, t] == IMAGE_TOKEN_ID:
                parts.append(visual[image][valid[image]])
                labs += [IGNORE_INDEX] * int(valid[image].sum())
                image += 1
            else:
                parts.append(embeds[b, t][None])
                labs.append(int(labels[b, t]))
        rows.append(torch.cat(parts))
        row_labels.append(labs)
    return rows, row_labels


def example():
    input_ids = torch.tensor([[5, IMAGE_TOKEN_ID, 6, 7], [8, 9, 0, 0], [IMAGE_TOKEN_ID, 3, 4, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]])
    labels = torch.where(mask.bool(), input_ids.clamp(min=0), IGNORE_INDEX)
    embeds = torch.randn(3, 4, 5)
    visual = torch.randn(2, 3, 5)  # two images (rows 0 and 2), three slots each
    valid = torch.tensor([[True, False, True], [True, True, True]])
    return input_ids, embeds, mask, visual, valid, labels


def test_fusion_equals_splicing_the_valid_tokens():
    input_ids, embeds, mask, visual, valid, labels = example()
    fused = fuse_visual_tokens(input_ids, embeds, mask, visual, valid, IMAGE_TOKEN_ID, labels=labels)
    rows, row_labels = reference_fuse(input_ids, embeds, mask, visual, valid, labels)
    for b, (row, labs) in enumerate(zip(rows, row_labels, strict=True)):
        keep = fused.attention_mask[b].bool()
        assert_close(fused.inputs_embeds[b, keep], row)
        assert fused.labels[b, keep].tolist() == labs
        assert fused.position_ids[b, keep].tolist() == list(range(len(row)))
    assert fused.inputs_embeds.shape[1] == 6  # 4 + (3 - 1)


def test_left_pad_right_aligns_rows():
    input_ids, embeds, mask, visual, valid, _ = example()
    input_ids[1], mask[1] = torch.tensor([0, 0, 8, 9]), torch.tensor([0, 0, 1, 1])  # prompts come left-padded
    embeds[1] = embeds[1].roll(2, dims=0)
    fused = fuse_visual_tokens(input_ids, embeds, mask, visual, valid, IMAGE_TOKEN_ID, left_pad=True)
    assert fused.labels is None
    assert fused.attention_mask[1].tolist() == [0, 0, 0, 0, 1, 1]  # the text-only row ends at the right edge
    assert_close(fused.inputs_embeds[1, -2:], embeds[1, 2:])


def test_fusion_with_holes_gives_the_same_logits_as_removal(tiny_llm):
    """Invalid slots are masked and skipped by positions: the LLM's output equals the spliced sequence's."""
    input_ids, _, mask, _, valid, labels = example()
    embeds = tiny_llm.embed(input_ids)
    visual = torch.randn(2, 3, tiny_llm.hidden_size)
    fused = fuse_visual_tokens(input_ids, embeds, mask, visual, valid, IMAGE_TOKEN_ID, labels=labels)
    logits = tiny_llm(fused.inputs_embeds, fused.attention_mask, fused.position_ids).logits
    rows, _ = reference_fuse(input_ids, embeds, mask, visual, valid, labels)
    for b, row in enumerate(rows):
        positions = torch.arange(len(row))[None]
        expected = tiny_llm(row[None], torch.ones(1, len(row), dtype=torch.long), positions).logits[0]
        assert_close(logits[b, fused.attention_mask[b].bool()], expected, atol=1e-5, rtol=1e-4)
