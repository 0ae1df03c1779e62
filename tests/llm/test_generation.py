import torch

from tokencompose.llm import greedy_generate


def test_kv_cache_on_and_off_give_identical_tokens(mask_llava, make_batch):
    batch = make_batch(mask_llava, count=4)
    mask_llava.eval()
    prompt = mask_llava.fuse(batch, for_generation=True)
    with_cache = greedy_generate(mask_llava.llm, prompt, max_new_tokens=6, use_cache=True)
    without = greedy_generate(mask_llava.llm, prompt, max_new_tokens=6, use_cache=False)
    assert torch.equal(with_cache, without)


def test_generation_does_not_depend_on_batch(mask_llava, make_batch):
    mask_llava.eval()
    batch = make_batch(mask_llava, count=6, seed=3)
    together = mask_llava.generate(batch, max_new_tokens=5)
    alone = []
    for i in range(len(batch)):
        single = make_batch(mask_llava, count=6, seed=3)
        for field in ("pixels",):
            setattr(single, field, getattr(single, field)[i : i + 1])
        ids = single.prompt_ids[i : i + 1]
        keep = single.prompt_mask[i : i + 1].bool()[0]
        single.prompt_ids, single.prompt_mask = ids[:, keep], single.prompt_mask[i : i + 1][:, keep]
        objects = single.objects
        single.objects = type(objects)(objects.masks[i : i + 1], objects.scores[i : i + 1], objects.valid[i : i + 1])
        alone += mask_llava.generate(single, max_new_tokens=5)
    assert together == alone
