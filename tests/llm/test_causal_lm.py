import pytest
import torch
from torch.testing import assert_close
from transformers import AutoModelForCausalLM

from tests.conftest import TINY_LLAMA
from tokencompose.data.synthetic import shapes_text_tokenizer
from tokencompose.llm import CausalLM, LoraSettings, causal_lm_loss, load_text_tokenizer


def test_loads_saved_checkpoint_and_tokenizer(tmp_path, tiny_llm, text_tokenizer):
    tiny_llm.model.save_pretrained(tmp_path)
    text_tokenizer.save_pretrained(tmp_path)
    tokenizer = load_text_tokenizer(str(tmp_path))
    loaded = CausalLM(text_tokenizer=tokenizer, name_or_path=str(tmp_path))
    embeds = tiny_llm.embed(torch.tensor([[2, 5, 6]]))
    args = (embeds, torch.ones(1, 3, dtype=torch.long), torch.arange(3)[None])
    assert_close(loaded(*args).logits, tiny_llm(*args).logits)
    assert len(tokenizer) == len(text_tokenizer)


def test_lora_trains_only_adapters(text_tokenizer):
    lm = CausalLM(text_tokenizer=text_tokenizer, config=TINY_LLAMA, lora=LoraSettings(r=4, target_modules=["q_proj", "v_proj"]))
    trainable = [n for n, p in lm.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_freeze_and_vocab_guard(text_tokenizer):
    frozen = CausalLM(text_tokenizer=text_tokenizer, config=TINY_LLAMA, freeze=True)
    assert not any(p.requires_grad for p in frozen.parameters())
    with pytest.raises(ValueError, match="embedding has 10 rows"):
        CausalLM(text_tokenizer=text_tokenizer, config={**TINY_LLAMA, "vocab_size": 10})
    with pytest.raises(ValueError, match="model_type"):
        CausalLM(text_tokenizer=text_tokenizer, config={"hidden_size": 8})


def test_loss_matches_hf_shifted_loss(tiny_llm):
    ids = torch.tensor([[2, 5, 6, 7, 8]])
    labels = torch.tensor([[-100, -100, 6, 7, 8]])
    ours = causal_lm_loss(tiny_llm(tiny_llm.embed(ids), torch.ones_like(ids), torch.arange(5)[None]).logits, labels)
    hf = tiny_llm.model(input_ids=ids, labels=labels).loss
    assert_close(ours, hf)


def test_random_config_uses_tokenizer_vocab():
    tokenizer = shapes_text_tokenizer()
    lm = CausalLM(text_tokenizer=tokenizer, config=TINY_LLAMA)
    assert lm.model.get_input_embeddings().num_embeddings == len(tokenizer)
    assert isinstance(lm.model, type(AutoModelForCausalLM.from_config(lm.model.config)))
