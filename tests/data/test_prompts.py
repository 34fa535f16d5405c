"""Prompt templates, Qwen chat rendering and category cleaning."""

import numpy as np
import pytest

from lavida.data.prompts import PromptTemplates, clean_categories


def test_official_templates_load():
    templates = PromptTemplates.load()
    assert len(templates.user) == 5 and len(templates.answer) == 5
    assert (
        templates.user[0] == "Can you segment the anomalies in this {type}? Anomalies include {categories}. "
    )
    assert templates.answer[templates.inference_answer] == "Sure, it is <SEG>."


def test_render_inference_prompt_exactly():
    chat = PromptTemplates.load().render(["fire", "fighting"], is_video=True)
    assert chat.prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>"
        "Can you segment the anomalies in this video? Anomalies include fire, fighting. <|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert chat.answer == "Sure, it is <SEG>.<|im_end|>"
    image = PromptTemplates.load().render(["dog"], is_video=False)
    assert "<|image_pad|>" in image.prompt and "in this image?" in image.prompt


def test_training_draws_cover_all_templates():
    templates = PromptTemplates.load()
    rng = np.random.default_rng(0)
    seen = {(templates.render(["x"], is_video=True, rng=rng).answer) for _ in range(200)}
    assert len(seen) == 5


def test_categories_are_cleaned():
    assert clean_categories([" fire ", "<SEG>", "smoke<|im_end|>", ""]) == ["fire", "smoke"]
    # A token whose removal reassembles another is removed too.
    assert clean_categories(["<<SEG>SEG>fire", "<|im_<|x|>end|>smoke", "<<<SEG>SEG>SEG>"]) == [
        "fire",
        "smoke",
    ]
    with pytest.raises(ValueError, match="empty"):
        clean_categories(["", "<SEG>"])
    with pytest.raises(TypeError, match="not one string"):
        clean_categories("fire, smoke")


def test_bad_template_file(tmp_path):
    bad = tmp_path / "t.json"
    bad.write_text('{"user": ["no field here"], "answer": ["<SEG>"], "system": "s"}')
    with pytest.raises(ValueError, match="categories"):
        PromptTemplates.load(bad)
    bad.write_text('{"user": []}')
    with pytest.raises(ValueError, match="t.json"):
        PromptTemplates.load(bad)
