"""LLaVA-Mini pre-fusion and the reduction family inside the model: equivalences and properties."""


import copy
from functools import partial

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.testing import assert_close

from tests.conftest import build_mask_llava
from tests.pruning_utils import assert_no_pruning_is_plain
from tests.recipe_utils import REPO, ParseOnlyCLI, small_data
from tokencompose.llm import HideBehindStream, ModalityPreFusion
from tokencompose.recipes import TokenComposeCLI
from tokencompose.tokenizers import (
    AverageOverBudgets,
    CLSAttentionSelector,
    MatryoshkaPoolTokenizer,
    PatchPoolTokenizer,
    QueryCompressor,
)


def llava_mini(text_tokenizer, **overrides):
    parts = dict(
        tokenizers={"patch": PatchPoolTokenizer(grid=None), "compressed": partial(QueryCompressor, side=1, heads=4)},
        scaler=None,
        text_fusion=partial(ModalityPreFusion, num_layers=2, context="patch"),
    )
    return build_mask_llava(text_tokenizer, **{**parts, **overrides})


def test_llava_mini_sends_one_token_per_image_and_trains(text_tokenizer, make_batch):
    model = llava_mini(text_tokenizer)
    assert model.visual_tokens_per_image() == {"compressed": 1}
    assert type(model.text_fusion.layers[0]) is type(model.llm.model.model.layers[0])  # the LLM's own layer kind
    batch = make_batch(model, count=3)
    fused = model.fuse(batch)
    assert fused.inputs_embeds.shape[1] == batch.input_ids.shape[1]  # the placeholder became exactly one token
    _, loss = model(batch)
    loss.backward()
    assert model.text_fusion.layers[0].mlp.down_proj.weight.grad.abs().sum() > 0
    assert model.tokenizers["compressed"].queries.grad is not None


def multi_turn_batch(model, answer: str):
    from tests.conftest import raw_samples
    sample = raw_samples(1)[0]
    sample["json"] = dict(sample["json"], conversations=[
        {"from": "human", "value": "<image>\nwhat color is the circle ?"}, {"from": "gpt", "value": answer},
        {"from": "human", "value": "how many shapes are there ?"}, {"from": "gpt", "value": "two"},
    ])
    transform = model.data_transform()
    return transform.collator()([transform.processor(training=False)(sample)])


def test_prefusion_never_sees_answers(text_tokenizer):
    """Changing the first answer leaves every other position's fused embedding (the second question too) as is."""
    model = llava_mini(text_tokenizer).eval()
    red, blue = multi_turn_batch(model, "red"), multi_turn_batch(model, "blue")
    changed = red.input_ids != blue.input_ids
    assert changed.sum() == 1
    second_question = (red.labels == -100) & (torch.arange(red.input_ids.shape[1]) > changed.nonzero()[0, 1])
    assert second_question.sum() > 3
    with torch.no_grad():
        a, b = model.fuse(red).inputs_embeds, model.fuse(blue).inputs_embeds
    length = red.input_ids.shape[1]
    assert_close(a[:, :length][~changed], b[:, :length][~changed])


def test_m3_training_loss_is_the_mean_over_scales(text_tokenizer, make_batch):
    model = build_mask_llava(text_tokenizer, tokenizers={"patch": MatryoshkaPoolTokenizer(scales=(1, 4, 64))}, scaler=None,
                             budget_schedule=AverageOverBudgets("patch"))
    batch = make_batch(model, count=2)
    model.train()
    per_scale = []
    for scale in (1, 4, 64):
        model.tokenizers["patch"].use_budget(scale)
        per_scale.append(model(batch)[1])

    class Quiet:
        def log(self, *args, **kwargs):
            return None

    model.log = Quiet().log
    assert_close(model.training_step(batch, 0), torch.stack(per_scale).mean())
    assert model.tokenizers["patch"].scale == 64  # back to the full scale after the step


def test_m3_in_the_model_projects_every_patch_then_pools(text_tokenizer, make_batch):
    """Re-derived from mu-cai/matryoshka-mm llava/model/llava_arch.py @ 163ac77b71db2c671a738f54e589b3ca332f94b9:
    ``encode_images`` (vision tower, then ``mm_projector`` on all patches), then ``matryoshka_vis_token_process``
    (view (N, H, W, C), avg_pool2d with kernel = stride = sqrt(H*W / scale), flatten in raster order)."""
    model = build_mask_llava(text_tokenizer, tokenizers={"patch": MatryoshkaPoolTokenizer(scales=(1, 4, 16, 64))},
                             scaler=None).eval()
    pixels = make_batch(model, count=2).pixels
    with torch.no_grad():
        projected = model.projectors["shared"](model.encoder(pixels).patches.flatten(1, 2))  # (2, 64, D_llm)
        grid = projected.view(2, 8, 8, -1).permute(0, 3, 1, 2)
        for scale in (1, 4, 16, 64):
            model.tokenizers["patch"].use_budget(scale)
            size = int((64 / scale) ** 0.5)
            expected = F.avg_pool2d(grid, kernel_size=size, stride=size).permute(0, 2, 3, 1).reshape(2, scale, -1)
            assert_close(model.encode_images(pixels).tokens, expected)


def test_m3_offers_the_published_unfrozen_vision_tower(synthetic_root):
    """mu-cai/matryoshka-mm scripts/v1_5/finetune.sh @ f6aada8c: --unfreeze_mm_vision_tower True,
    --mm_vision_tower_lr 2e-5 (the flags recipes/m3.yaml's header gives)."""
    flags = ["--model.encoder.init_args.freeze", "false", "--model.optimization.learning_rates", "{encoder: 2.0e-5}"]
    full = ParseOnlyCLI(args=["--config", str(REPO / "recipes" / "m3.yaml"), *flags], run=False).config["model"]
    assert full["encoder"]["init_args"]["freeze"] is False and full["optimization"]["learning_rates"] == {"encoder": 2e-5}
    args = ["--config", str(REPO / "recipes" / "tiny" / "m3.yaml"), "--trainer.fast_dev_run", "true",
            *small_data(synthetic_root), *flags]
    cli = TokenComposeCLI(args=args, run=False)
    before = {n: p.detach().clone() for n, p in cli.model.encoder.named_parameters()}
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    groups = {g["name"]: g for g in cli.trainer.optimizers[0].param_groups}
    assert groups["encoder"]["initial_lr"] == 2e-5 and groups["llm"]["initial_lr"] == 0.003
    changed = [n for n, p in cli.model.encoder.named_parameters() if not torch.equal(p, before[n])]
    assert any("layers.0." in n for n in changed)  # the tower trains


def shared_weights_pair(text_tokenizer, tokenizer):
    """A LLaVA-1.5 composition and one with ``tokenizer``, with identical weights."""
    base = build_mask_llava(text_tokenizer, tokenizers={"patch": PatchPoolTokenizer(grid=None)}, scaler=None).eval()
    other = build_mask_llava(text_tokenizer, tokenizers={"patch": tokenizer}, scaler=None).eval()
    other.load_state_dict(base.state_dict(), strict=False)
    return base, other


def test_m3_at_full_scale_equals_llava15(text_tokenizer, make_batch):
    base, m3 = shared_weights_pair(text_tokenizer, MatryoshkaPoolTokenizer(scales=(1, 4, 16, 64), scale=64))
    batch = make_batch(base, count=2)
    with torch.no_grad():
        assert_close(m3(batch)[0], base(batch)[0])


def test_fastervlm_keeping_every_patch_equals_llava15(text_tokenizer, make_batch):
    base, fast = shared_weights_pair(text_tokenizer, CLSAttentionSelector(keep=None))
    batch = make_batch(base, count=2)
    with torch.no_grad():
        assert_close(fast(batch)[0], base(batch)[0])
    fast.tokenizers["patch"].keep = 8
    assert fast.visual_tokens_per_image() == {"patch": 8}
    with torch.no_grad():
        assert fast.encode_images(batch.pixels).tokens.shape[1] == 8


def voco(text_tokenizer):
    from tests.conftest import TINY_LLAMA
    from tokencompose.llm import CausalLM
    from tokencompose.tokenizers import CompressionTokens

    return build_mask_llava(
        text_tokenizer,
        tokenizers={"patch": PatchPoolTokenizer(grid=None), "voco": partial(CompressionTokens, count=2)},
        scaler=None,
        attention=HideBehindStream("voco"),
        llm=CausalLM(text_tokenizer=text_tokenizer, config={**TINY_LLAMA, "attn_implementation": "eager"}),
    ).eval()


def test_voco_text_after_the_summary_never_attends_to_the_image(text_tokenizer, make_batch):
    model = voco(text_tokenizer)
    batch = make_batch(model, count=2)
    fused = model.fuse(batch)
    summary = fused.visual_kind == 1  # the voco stream
    first = summary.float().argmax(1)
    last = summary.shape[1] - 1 - summary.flip(1).float().argmax(1)
    with torch.no_grad():
        out = model.llm.model(inputs_embeds=fused.inputs_embeds, attention_mask=fused.attention(),
                              position_ids=fused.position_ids, output_attentions=True)
    for row in range(2):
        after = last[row] + 1
        for layer in out.attentions:
            assert layer[row, :, after:, : first[row]].abs().max() == 0  # not the image, not the system prompt
            assert layer[row, :, after:, first[row] : after].sum() > 0  # but the summary tokens, yes
    # the image still matters: it reaches the answer through the summary tokens
    other = copy.deepcopy(batch)
    other.pixels = torch.randn_like(other.pixels)
    with torch.no_grad():
        assert not torch.allclose(model(batch)[0], model(other)[0])


def test_voco_cached_and_uncached_decoding_agree(text_tokenizer, make_batch):
    model = voco(text_tokenizer)
    batch = make_batch(model, count=3)
    assert model.generate(batch, max_new_tokens=5, use_cache=True) == model.generate(batch, max_new_tokens=5, use_cache=False)


def fastv_model(text_tokenizer, drop_ratio=0.5, layer=1, rerank_each_step=False):
    from tests.conftest import TINY_LLAMA
    from tokencompose.llm import CausalLM, FastV

    return build_mask_llava(
        text_tokenizer,
        tokenizers={"patch": PatchPoolTokenizer(grid=None)},
        scaler=None,
        llm=CausalLM(text_tokenizer=text_tokenizer, config={**TINY_LLAMA, "attn_implementation": "eager"}),
        decoding=FastV(layer=layer, drop_ratio=drop_ratio, rerank_each_step=rerank_each_step),
    ).eval()


def test_fastv_with_ratio_zero_is_no_pruning(text_tokenizer, make_batch):
    assert_no_pruning_is_plain(fastv_model(text_tokenizer, drop_ratio=0.0), make_batch)


def test_fastv_drops_the_least_attended_visual_tokens(text_tokenizer, make_batch):
    model = fastv_model(text_tokenizer, drop_ratio=0.5, layer=1)
    batch = make_batch(model, count=2)
    prompt = model.fuse(batch, for_generation=True)
    stepper = model.decoding.stepper(model.llm, prompt, use_cache=True)
    stepper.first()
    assert stepper.keep.shape[1] == prompt.inputs_embeds.shape[1] - 32  # half of the 64 visual tokens
    with torch.no_grad():
        attentions = model.llm.model(inputs_embeds=prompt.inputs_embeds, attention_mask=prompt.attention(),
                                     position_ids=prompt.position_ids, output_attentions=True).attentions
    score = attentions[0][:, :, -1].mean(1)  # layer K-1 = 0, the last token's row
    visual = prompt.visual_kind >= 0
    for row in range(2):
        kept_visual = set(stepper.keep[row].tolist()) & set(visual[row].nonzero().flatten().tolist())
        expected = set(score[row].masked_fill(~visual[row], -1).topk(32).indices.tolist())
        assert kept_visual == expected
        assert set((~visual[row]).nonzero().flatten().tolist()) <= set(stepper.keep[row].tolist())  # text kept


def test_fastv_cached_and_uncached_decoding_agree(text_tokenizer, make_batch):
    model = fastv_model(text_tokenizer, drop_ratio=0.75, layer=1)
    batch = make_batch(model, count=3)
    assert model.generate(batch, max_new_tokens=5, use_cache=True) == model.generate(batch, max_new_tokens=5, use_cache=False)


def test_prefusion_reads_detached_text_embeddings(text_tokenizer, make_batch):
    """ictnlp/LLaVA-Mini ``llavamini/model/llavamini_arch.py`` (``encode_images_mini``, fork
    miznchimaki/LLaVA-Mini@423c788): ``all_text_embedding = get_input_embeddings()(ids).detach()`` feeds pre-fusion,
    and every LLM text position comes from it, so the embedding table gets no gradient through the text."""
    model = llava_mini(text_tokenizer)
    assert not model.llm.model.config.tie_word_embeddings
    batch = make_batch(model, count=2)
    _, loss = model(batch)
    loss.backward()
    table = model.llm.model.get_input_embeddings().weight
    assert table.grad is None or not table.grad.any()
    assert model.text_fusion.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0


def test_text_only_samples_are_prefused_with_a_zero_image(text_tokenizer, make_batch):
    """LLaVA-Mini ``llavamini/train/train.py`` (``LazySupervisedDataset.__getitem__``, same fork): a sample without an
    image gets ``torch.zeros(1, 3, crop, crop)``, and ``encode_images_mini`` pre-fuses every sample's text with its
    image, so a text-only sample's text is fused with the blank image's tokens."""
    from tests.conftest import raw_samples

    model = llava_mini(text_tokenizer).eval()
    sample = raw_samples(1)[0]
    text_only = {"__key__": "t", "json": dict(sample["json"], conversations=[
        {"from": "human", "value": "what color is the circle ?"}, {"from": "gpt", "value": "red"}])}
    transform = model.data_transform()
    processor = transform.processor(training=False)
    batch = transform.collator()([processor(sample), processor(text_only)])
    with torch.no_grad():
        fused = model.fuse(batch).inputs_embeds[1]  # the text-only sample: no visual token, same length as its ids
        blank = model.encode_images(torch.zeros(1, 3, 64, 64))
        to_llm = model.llm_positions(blank)
        instruction = batch.attention_mask[1:].bool() & (batch.labels[1:] == -100)
        expected, _ = model.text_fusion.run_layers(blank.tokens[:, ~to_llm], blank.valid[:, ~to_llm],
                                                   blank.tokens[:, to_llm], model.llm.embed(batch.input_ids[1:]),
                                                   instruction)
    length = int(batch.attention_mask[1].sum())
    assert_close(fused[:length], expected[0, :length])
    plain = model.llm.embed(batch.input_ids[1:])[0, :length]
    assert not torch.allclose(fused[:length][instruction[0, :length]], plain[instruction[0, :length]])
    unfused = llava_mini(text_tokenizer,
                         text_fusion=partial(ModalityPreFusion, num_layers=2, context="patch", text_only="unfused"))
    unfused.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert_close(unfused.eval().fuse(batch).inputs_embeds[1, :length], plain)


class RecordLosses(Callback):
    def __init__(self) -> None:
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses[trainer.global_step] = float(outputs["loss"])


def fit_tiny(recipe: str, root, steps: int, ckpt_dir, ckpt_path=None) -> dict[int, float]:
    args = ["--config", str(REPO / "recipes" / "tiny" / recipe), "--trainer.max_steps", str(steps),
            "--trainer.val_check_interval", "1000", "--data.batch_size", "8", *small_data(root)]
    cli = TokenComposeCLI(args=args, run=False)
    recorder = RecordLosses()
    cli.trainer.callbacks += [recorder, ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=5, save_top_k=-1)]
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    return recorder.losses


def test_mqt_resumed_run_draws_the_same_query_counts(synthetic_root, tmp_path):
    """Like tests/test_resume.py, for MQT: m is random per batch, so the losses after resuming mid-epoch equal the
    uninterrupted run's only if the draw of m resumes too (the generator's state is in the checkpoint)."""
    straight = fit_tiny("mqt.yaml", synthetic_root, 10, tmp_path / "a")
    checkpoint = next((tmp_path / "a").glob("*step=5*.ckpt"))
    state = torch.load(checkpoint, weights_only=True)
    assert "budget_schedule._extra_state" in state["state_dict"]
    resumed = fit_tiny("mqt.yaml", synthetic_root, 10, tmp_path / "b", ckpt_path=str(checkpoint))
    assert sorted(resumed) == list(range(6, 11))
    assert [resumed[s] for s in range(6, 11)] == [straight[s] for s in range(6, 11)]


def test_mqt_recipes_project_with_one_bias_free_linear(synthetic_root):
    for recipe in (REPO / "recipes" / "mqt.yaml", REPO / "recipes" / "tiny" / "mqt.yaml"):
        projector = ParseOnlyCLI(args=["--config", str(recipe)], run=False).config["model"]["projector"]
        assert projector["class_path"] == "tokencompose.projectors.LinearProjector"
        assert projector["init_args"]["bias"] is False
    cli = TokenComposeCLI(args=["--config", str(REPO / "recipes" / "tiny" / "mqt.yaml"), *small_data(synthetic_root)],
                          run=False)
    shared = cli.model.projectors["shared"]
    assert [name for name, _ in shared.named_parameters()] == ["linear.weight"]  # MQT's `proj`, nothing else
    assert shared.linear.weight.shape == (cli.model.llm.hidden_size, cli.model.encoder.hidden_size)


def test_fastv_keeps_int_n_times_the_keep_ratio_on_a_hand_checked_case():
    """pkunlp-icler/FastV src/FastV/lmms-eval-with-kvcache/fastv_kvcache.py @ 49dfad77: the last token's layer
    K-1 attention, mean over heads, over the image positions; ``topk(int(576 * ratio))``, sorted with the rest."""
    from tokencompose.llm import FastV

    attention = torch.zeros(1, 2, 7, 7)  # positions: 0 text, 1-4 image, 5-6 text
    attention[0, 0, -1] = torch.tensor([0.10, 0.05, 0.30, 0.10, 0.20, 0.05, 0.20])
    attention[0, 1, -1] = torch.tensor([0.10, 0.25, 0.10, 0.00, 0.30, 0.05, 0.20])
    # head means over the image: 1 -> 0.15, 2 -> 0.20, 3 -> 0.05, 4 -> 0.25
    visual = torch.tensor([[False, True, True, True, True, False, False]])
    valid = torch.ones_like(visual)
    fastv = FastV(layer=1, drop_ratio=0.3)  # keep int(4 * 0.7) = 2 (rounding the drop, 1.2 -> 1, would keep 3)
    assert fastv.keep_index(attention, valid, visual)[0].tolist() == [[0, 2, 4, 5, 6]]
    assert FastV(layer=1, drop_ratio=0.8).keep_index(attention, valid, visual)[0].tolist() == [[0, 5, 6]]  # int(0.8)
    for drop in (0.5, 0.75, 0.9, 0.25, 0.3):  # the official's int(576 * keep_ratio)
        assert FastV(drop_ratio=drop).kept_count(576) == int(576 * round(1 - drop, 6))


class RecordingStepper:
    """Passes the FastV stepper's logits on and keeps what it ran on at every step."""

    def __init__(self, stepper) -> None:
        self.stepper, self.steps = stepper, []

    def _record(self, logits):
        s = self.stepper
        self.steps.append((s.keep.clone(), s.embeds.clone(), s.positions.clone(), s.valid.clone(), s.visual.clone()))
        return logits

    def first(self):
        return self._record(self.stepper.first())

    def next(self, embeds, positions):
        return self._record(self.stepper.next(embeds, positions))


def test_fastv_rerank_each_step_reselects_from_the_newest_token(text_tokenizer, make_batch):
    """pkunlp-icler/FastV src/transformers/src/transformers/models/llama/modeling_llama.py @ eca14d61
    (``fast_v_inplace``): no cache, so every step runs the whole sequence; at layer K the kept image tokens are
    re-chosen from layer K-1's attention of the current last token, mean over heads."""
    from tokencompose.llm.generation import greedy_generate

    model = fastv_model(text_tokenizer, drop_ratio=0.5, layer=1, rerank_each_step=True)
    prompt = model.fuse(make_batch(model, count=2), for_generation=True)
    recorder = RecordingStepper(model.decoding.stepper(model.llm, prompt, use_cache=True))  # the cache is dropped
    assert recorder.stepper.cache is None
    greedy_generate(model.llm, prompt, 5, stepper=recorder)
    assert len(recorder.steps) == 5
    kept_sets = []
    for keep, embeds, positions, valid, visual in recorder.steps:
        with torch.no_grad():
            attention = model.llm.model(inputs_embeds=embeds, attention_mask=valid.long(), position_ids=positions,
                                        output_attentions=True).attentions[0]  # layer K-1 = 0 sees every token
        score = attention[:, :, -1].mean(1)  # the current last token's row
        step_sets = []
        for row in range(2):
            kept = set(keep[row].tolist())
            expected = set(score[row].masked_fill(~visual[row], -1).topk(32).indices.tolist())  # int(64 * 0.5)
            step_sets.append(kept & set(visual[row].nonzero().flatten().tolist()))
            assert step_sets[-1] == expected
            assert set((valid[row] & ~visual[row]).nonzero().flatten().tolist()) <= kept  # text and new tokens
        kept_sets.append(step_sets)
    assert any(sets != kept_sets[0] for sets in kept_sets[1:])  # the selection did move: a real re-ranking
    batch = make_batch(model, count=2)
    assert model.generate(batch, max_new_tokens=4, use_cache=True) == model.generate(batch, max_new_tokens=4, use_cache=False)
