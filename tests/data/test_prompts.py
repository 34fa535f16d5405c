"""Prompt templates, Qwen chat rendering and category cleaning."""

import dataclasses
import re

import numpy as np
import pytest

from lavida.data.prompts import PromptTemplates, clean_categories, parse_categories


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
    bad.write_text('{"user": ["{categories}"], ')
    with pytest.raises(
        ValueError, match=rf"^{re.escape(str(bad))}: not valid JSON \(Expecting .*\); expected a JSON object"
    ):
        PromptTemplates.load(bad)


def test_prompts_and_templates_are_immutable():
    """Templates are validated once, in __post_init__; a field changed afterwards would skip the checks."""
    templates = PromptTemplates.load()
    with pytest.raises(dataclasses.FrozenInstanceError):
        templates.answer = ("no token",)
    chat = templates.render(["fire"], is_video=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        chat.answer = ""


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"user": ("Find {categories} <SEG>.",)}, r"The user template .* contains '<SEG>'"),
        ({"system": "You find <SEG>."}, r"The system prompt .* contains '<SEG>'"),
        ({"answer": ("<|im_start|><SEG>",)}, r"The answer template .* contains '<\|im_start\|>'"),
    ],
)
def test_seg_token_belongs_to_the_answer_only(fields, problem):
    """f_sem is read at the one <SEG> of the answer (Eq. 5): a <SEG> in the user turn or system prompt, or
    a chat token anywhere, would move it or the supervised span."""
    kwargs = {
        "user": ("Find {categories} in this {type}.",),
        "answer": ("It is <SEG>.",),
        "inference_answer": 0,
    }
    with pytest.raises(ValueError, match=problem):
        PromptTemplates(**{**kwargs, **fields})


def test_inference_indices_must_name_a_template():
    """The official file has 5 user templates: index 4 is the last one, 5 is out of range."""
    assert PromptTemplates.load(inference_user=4).render(["fire"], is_video=True).prompt.count("sceen") == 1
    with pytest.raises(ValueError, match=r"inference_user=5 is out of range: there are 5 user templates\."):
        PromptTemplates.load(inference_user=5)
    with pytest.raises(ValueError, match=r"there is 1 answer template\. "):
        PromptTemplates(user=("{categories}",), answer=("<SEG>",), inference_answer=1)


def test_parse_categories_from_a_command_line_string_or_list():
    """lavida-detect's categories= is one comma-separated string or a list; blanks are dropped."""
    assert parse_categories(" fire, car accident ,, ") == ["fire", "car accident"]
    assert parse_categories([" fire ", "", 3]) == ["fire", "3"]
    # Hydra reads an unquoted number as one: categories=1984
    assert parse_categories(1984) == ["1984"] and parse_categories(2.5) == ["2.5"]
    for value in (True, None):
        with pytest.raises(
            ValueError, match=rf"^categories must be text or a list of texts, got {value}; e\.g\."
        ):
            parse_categories(value)
    with pytest.raises(ValueError, match="categories is empty"):
        parse_categories(" , ")


@pytest.mark.parametrize(
    ("categories", "hint"),
    [("fire", "pass ['fire']."), ("fire, smoke", "pass ['fire, smoke'], or ['fire', 'smoke'] for several.")],
)
def test_one_string_of_categories_is_refused_with_the_list_to_pass(categories, hint):
    """A string would be searched letter by letter; the message shows the list, split on commas if several."""
    with pytest.raises(TypeError) as info:
        clean_categories(categories)
    assert str(info.value).endswith(hint)


@pytest.mark.parametrize(("user", "answer"), [((), ("<SEG>",)), (("{categories}",), ())])
def test_either_template_list_empty_is_refused(user, answer):
    """One empty list is enough to make render() impossible; the message says what is missing."""
    with pytest.raises(ValueError, match="at least one user and one answer template"):
        PromptTemplates(user=user, answer=answer, inference_answer=0)


@pytest.mark.parametrize("field", ["{type!z}", "{type:d}"])
def test_a_field_that_only_fails_when_formatted_is_refused_on_load(field):
    """A conversion or format spec that str.format rejects passes the field-name check; the templates
    are formatted once when made, so the error comes on load, not in a dataloader worker."""
    with pytest.raises(ValueError, match=r"is not a valid format string"):
        PromptTemplates(
            user=(f"Find {{categories}} in this {field}.",), answer=("<SEG>",), inference_answer=0
        )


def test_a_template_files_system_prompt_is_rendered(tmp_path):
    """The file's "system" replaces Qwen2-VL's default system prompt in the rendered conversation."""
    path = tmp_path / "templates.json"
    path.write_text(
        '{"user": ["Find {categories}."], "answer": ["<SEG>"], "system": "You watch a camera."}',
        encoding="utf-8",
    )
    templates = PromptTemplates.load(path, inference_answer=0)
    assert templates.system == "You watch a camera."
    assert templates.render(["fire"], is_video=False).prompt.startswith(
        "<|im_start|>system\nYou watch a camera.<|im_end|>\n<|im_start|>user\n"
    )
