import pytest

from tokencompose.llm import (
    IGNORE_INDEX,
    IMAGE_TOKEN_ID,
    ConversationEncoder,
    HFChatTemplate,
    PlainTemplate,
    SequenceTooLong,
    VicunaV1Template,
)

CONVERSATION = [
    {"from": "human", "value": "<image>\nwhat color is the circle ?"},
    {"from": "gpt", "value": "red"},
    {"from": "human", "value": "how many shapes are there ?"},
    {"from": "gpt", "value": "two"},
]


def test_vicuna_v1_renders_llava_format(text_tokenizer):
    segments = VicunaV1Template(system="SYS").segments(CONVERSATION, text_tokenizer)
    text = "".join(s.text for s in segments)
    assert text == (
        "SYS USER: <image>\nwhat color is the circle ? ASSISTANT: red</s>"
        "USER: how many shapes are there ? ASSISTANT: two</s>"
    )
    assert [s.text for s in segments if s.is_target] == [" red</s>", " two</s>"]
    prompt = VicunaV1Template(system="SYS").segments(CONVERSATION, text_tokenizer, add_generation_prompt=True)
    assert "".join(s.text for s in prompt).endswith("how many shapes are there ? ASSISTANT:")


def test_plain_template_targets_only_the_caption(text_tokenizer):
    segments = PlainTemplate().segments(CONVERSATION[:2], text_tokenizer)
    assert [(s.text, s.is_target) for s in segments] == [("<image>", False), ("red\n", True)]


def test_encoder_labels_only_answers(text_tokenizer):
    encoder = ConversationEncoder(text_tokenizer, VicunaV1Template(), max_length=512, visual_tokens_per_image=10)
    encoded = encoder.encode(CONVERSATION)
    assert encoded.input_ids[0] == text_tokenizer.bos_token_id
    assert encoded.input_ids.count(IMAGE_TOKEN_ID) == 1
    targets = [i for i, label in zip(encoded.input_ids, encoded.labels, strict=True) if label != IGNORE_INDEX]
    assert text_tokenizer.convert_ids_to_tokens(targets) == ["red", "</s>", "two", "</s>"]


def test_length_guard_cuts_text_never_visual_tokens(text_tokenizer):
    encoder = ConversationEncoder(text_tokenizer, VicunaV1Template(system="a"), max_length=20, visual_tokens_per_image=8)
    encoded = encoder.encode(CONVERSATION)
    assert encoder.expanded_length(encoded.input_ids) == 20
    assert IMAGE_TOKEN_ID in encoded.input_ids
    tight = ConversationEncoder(text_tokenizer, VicunaV1Template(system="a"), max_length=6, visual_tokens_per_image=8)
    with pytest.raises(SequenceTooLong, match="max_length=6"):
        tight.encode(CONVERSATION)


def test_hf_chat_template_segments(text_tokenizer):
    tokenizer = text_tokenizer.__class__(tokenizer_object=text_tokenizer.backend_tokenizer, eos_token="</s>",
                                         bos_token="<s>", pad_token="<pad>", unk_token="<unk>")
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] | upper }} : {{ m['content'] }}"
        "{% if m['role'] == 'assistant' %}</s>{% endif %} {% endfor %}"
        "{% if add_generation_prompt %}ASSISTANT :{% endif %}"
    )
    segments = HFChatTemplate().segments(CONVERSATION, tokenizer)
    assert [s.text for s in segments if s.is_target] == [" red</s> ", " two</s> "]
    assert "".join(s.text for s in segments) == tokenizer.apply_chat_template(
        [{"role": "user" if t["from"] == "human" else "assistant", "content": t["value"]} for t in CONVERSATION],
        tokenize=False,
    )
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="chat_template"):
        HFChatTemplate().segments(CONVERSATION, tokenizer)


def test_shapes_tokenizer_chat_template_gives_answer_targets(text_tokenizer):
    encoder = ConversationEncoder(text_tokenizer, HFChatTemplate(), max_length=128, visual_tokens_per_image=4)
    encoded = encoder.encode(CONVERSATION)
    assert encoded.input_ids[0] == text_tokenizer.bos_token_id and encoded.input_ids.count(text_tokenizer.bos_token_id) == 1
    targets = [i for i, label in zip(encoded.input_ids, encoded.labels, strict=True) if label != IGNORE_INDEX]
    assert text_tokenizer.convert_ids_to_tokens(targets) == ["red", "</s>", "two", "</s>"]


def test_bad_conversation_names_the_turn(text_tokenizer):
    with pytest.raises(ValueError, match="turn 1"):
        VicunaV1Template().segments([{"from": "human", "value": "q"}, {"from": "robot", "value": "a"}], text_tokenizer)


@pytest.mark.parametrize("template", [VicunaV1Template(), PlainTemplate(), HFChatTemplate()], ids=type)
def test_prompt_from_one_tokenisation_equals_the_generation_prompt(template, text_tokenizer):
    encoder = ConversationEncoder(text_tokenizer, template, max_length=512, visual_tokens_per_image=4)
    conversation = CONVERSATION[:2] if isinstance(template, PlainTemplate) else CONVERSATION
    full, prompt = encoder.encode_with_prompt(conversation)
    assert full.input_ids == encoder.encode(conversation).input_ids
    assert prompt.input_ids == encoder.encode(conversation, add_generation_prompt=True).input_ids


def test_conversation_encoder_pickles_for_spawned_workers(text_tokenizer):
    import pickle

    encoder = ConversationEncoder(text_tokenizer, VicunaV1Template(), max_length=512, visual_tokens_per_image=4)
    encoder.encode(CONVERSATION)
    copy = pickle.loads(pickle.dumps(encoder))
    assert copy.encode(CONVERSATION) == encoder.encode(CONVERSATION)


def test_plain_refuses_what_preprocess_plain_asserts_against():
    """haotian-liu/LLaVA ``llava/train/train.py`` ``preprocess_plain``: ``assert len(source) == 2`` and
    ``assert DEFAULT_IMAGE_TOKEN in source[0]['value']``; here a clear, countable refusal instead of a crash."""
    import pytest

    from tokencompose.llm.templates import PlainTemplate, TemplateMismatch

    text_only = [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]
    with pytest.raises(TemplateMismatch, match="no <image>"):
        PlainTemplate().segments(text_only, None)
    four = [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}] * 2
    with pytest.raises(TemplateMismatch, match="4 turns"):
        PlainTemplate().segments(four, None)
