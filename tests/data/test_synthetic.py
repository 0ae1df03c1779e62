import numpy as np

from tokencompose.data import QUESTION_TYPES, ShapesGenerator, shapes_text_tokenizer, shapes_vocabulary
from tokencompose.data.synthetic import NUMBER_WORDS
from tokencompose.llm import load_text_tokenizer


def test_generator_is_deterministic_and_consistent():
    a, b = ShapesGenerator(seed=1)(7), ShapesGenerator(seed=1)(7)
    assert np.array_equal(a.image, b.image) and a.conversation == b.conversation
    assert not np.array_equal(a.image, ShapesGenerator(seed=2)(7).image)
    for i in range(40):
        s = ShapesGenerator()(i)
        assert s.question_type == QUESTION_TYPES[i % 4]
        assert s.masks.shape[0] == len(s.labels) == len(s.boxes)
        for mask, (x0, y0, x1, y1) in zip(s.masks, s.boxes, strict=True):
            ys, xs = np.nonzero(mask)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
        assert not (s.masks.sum(0) > 1).any()  # shapes never overlap
        answer = s.conversation[1]["value"]
        if s.question_type == "count":
            assert answer == NUMBER_WORDS[len(s.labels)]
        if s.question_type == "color":
            shape = s.conversation[0]["value"].split()[-2]
            assert f"{answer} {shape}" in s.labels


def test_text_tokenizer_covers_every_word_and_round_trips(tmp_path):
    tokenizer = shapes_text_tokenizer()
    for i in range(20):
        for turn in ShapesGenerator()(i).conversation:
            ids = tokenizer(turn["value"].replace("<image>", ""), add_special_tokens=False).input_ids
            assert tokenizer.unk_token_id not in ids
    tokenizer.save_pretrained(tmp_path)
    loaded = load_text_tokenizer(str(tmp_path))
    assert loaded.get_vocab() == tokenizer.get_vocab() and len(loaded) == len(shapes_vocabulary())
    assert loaded.decode(loaded("is there a red circle ?").input_ids) == "is there a red circle ?"
