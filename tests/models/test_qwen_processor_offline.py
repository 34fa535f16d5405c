"""The offline byte-level Qwen processor (lavida/models/qwen_processor.py) that random models, tests and
tiny configs use in place of a downloaded tokenizer: its token ids and its ``<SEG>``."""

import pytest

from lavida.models.qwen_processor import (
    QWEN_SPECIAL_TOKENS,
    add_seg_token,
    build_processor,
    byte_level_tokenizer,
)


def test_byte_level_ids_are_dense_pad_first_then_the_sorted_byte_symbols():
    """``<|endoftext|>`` (the pad) is 0, the 256 byte symbols 1-256 in sorted order, Qwen's special tokens
    after them. Worked by hand: printable ASCII maps to itself and sorts first from '!' (33), so 'A' (65)
    is id 65 - 33 + 1 = 33 and 'a' (97) id 65; a space is byte 32, remapped to 'Ġ' (U+0120) and sorted
    after the 188 printable symbols and the remapped bytes 0-31, at id 188 + 33 = 221."""
    tokenizer = byte_level_tokenizer()
    assert tokenizer.pad_token_id == 0 and tokenizer.convert_ids_to_tokens(0) == "<|endoftext|>"
    assert tokenizer("A a")["input_ids"] == [33, 221, 65]
    assert sorted(tokenizer.get_vocab().values()) == list(range(257 + len(QWEN_SPECIAL_TOKENS)))


def test_seg_is_added_once_with_the_next_free_id():
    """``<SEG>`` takes the first id after the 263 of the byte-level vocabulary, and a second call finds it
    instead of adding another. It is special: decoding a generated text with skip_special_tokens drops it."""
    tokenizer = byte_level_tokenizer()
    assert add_seg_token(tokenizer) == 263
    assert add_seg_token(tokenizer) == 263 and len(tokenizer) == 264
    assert tokenizer("x<SEG>y")["input_ids"] == [88, 263, 89]  # x, y: 120 - 32 and 121 - 32, never split
    assert tokenizer.decode([88, 263, 89], skip_special_tokens=True) == "xy"  # special: left out of a text


def test_a_misspelt_family_is_refused_with_the_valid_ones():
    """``model.mllm.family=qwen2.5_vl`` (a dot for the underscore) reaches the processor, the first thing
    built for a family."""
    with pytest.raises(
        ValueError, match=r"^Unknown MLLM family 'qwen2\.5_vl'; expected 'qwen2_vl' or 'qwen2_5_vl'\.$"
    ):
        build_processor(tokenizer=byte_level_tokenizer(), family="qwen2.5_vl")
