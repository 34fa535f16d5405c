"""Malformed dataset files fail with errors that name the file, what was expected, and how to fix it."""

import json
import logging
import re

import numpy as np
import pytest
from PIL import Image

from lavida.data.sources.base import DatasetFormatError
from lavida.data.sources.masks import read_index_png
from lavida.data.sources.synthetic import SyntheticSource
from lavida.synthetic.datasets import SegmentationSetSpec, default_split, write_segmentation_set

# -- label PNGs ------------------------------------------------------------------------------------------


def test_rgb_label_png_says_which_file_is_expected_not_to_replace_it(tmp_path):
    # Full-ADE20K *_seg.png and Cityscapes *_color.png are RGB: the file is readable, just the wrong one.
    path = tmp_path / "ADE_train_00000001_seg.png"
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(path)
    with pytest.raises(DatasetFormatError) as info:
        read_index_png(path)
    message = str(info.value)
    assert str(path) in message
    assert "single-channel label PNG" in message and "mode RGB" in message
    assert "replace it with a good copy" not in message
    assert "ADEChallengeData2016/annotations/" in message


def test_corrupt_label_png_still_asks_for_a_good_copy(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetFormatError, match=r"broken\.png: cannot read the label image.*good copy"):
        read_index_png(path)


# -- the synthetic set's meta.json -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"videos": ', r"not a readable JSON file"),
        ("[1, 2]", r"expected a JSON object"),
        ('{"videos": [1]}', r'"videos" must map'),
        ('{"videos": {"v0": 3}}', r'videos entry "v0" is int, not an object'),
        ('{"videos": {"v0": {"objects": {"1": "red circle"}}}}', r'"v0".*"frames"'),
        ('{"videos": {"v0": {"frames": 2}}}', r'"v0".*"objects"'),
        ('{"images": {"i0": {"frames": 1, "objects": ["red circle"]}}}', r'"i0".*"objects"'),
        ('{"videos": {"v0": {"frames": 0, "objects": {"1": "red circle"}}}}', r'"v0".*"frames"'),
        ('{"videos": {"v0": {"frames": 2, "objects": {"one": "red circle"}}}}', r'"v0".*"objects"'),
    ],
)
def test_malformed_synthetic_meta_names_the_file_and_layout(tmp_path, text, problem):
    meta_file = tmp_path / "meta.json"
    meta_file.write_text(text)
    with pytest.raises(DatasetFormatError, match=problem) as info:
        list(SyntheticSource(tmp_path).index())
    message = str(info.value)
    assert str(meta_file) in message
    assert '"objects"' in message and '"frames"' in message  # the expected layout
    assert "write_segmentation_set" in message and "download" not in message  # the fix for a synthetic set


def test_a_synthetic_set_without_meta_says_how_to_write_it(tmp_path):
    with pytest.raises(
        DatasetFormatError,
        match=re.escape(f"{tmp_path / 'meta.json'}: not found; write the set with lavida.synthetic.datasets"),
    ):
        list(SyntheticSource(tmp_path).index())


def test_wellformed_synthetic_meta_still_indexes(tmp_path):
    (tmp_path / "meta.json").write_text(
        json.dumps({"videos": {"v0": {"frames": 1, "objects": {"1": "red circle"}}}})
    )
    (tmp_path / "Annotations" / "v0").mkdir(parents=True)
    label = np.zeros((4, 5), np.uint8)
    label[1, 1] = 1
    Image.fromarray(label, mode="L").save(tmp_path / "Annotations" / "v0" / "00000.png")
    (record,) = SyntheticSource(tmp_path).index()
    assert record.key == "v0"
    assert [target.text for target in record.targets] == ["red circle"]
    assert record.targets[0].frames == (0,)


# -- prompt template files (§3.5) ------------------------------------------------------------------------


def _template_file(tmp_path, data) -> str:
    path = tmp_path / "templates.json"
    path.write_text(json.dumps(data))
    return path


def _good(**changes):
    return {
        "user": ["Find {categories} in this {type}."],
        "answer": ["It is <SEG>."],
        "system": "s",
        **changes,
    }


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (["Can you segment {categories}?"], r"expected a JSON object.*got list"),
        (_good(user="Find {categories}."), r"'user' must be a list of strings, got str"),
        (_good(answer=["It is <SEG>.", 3]), r"'answer' must be a list of strings"),
        (_good(system=["s"]), r"'system' must be a string, got list"),
        (
            _good(user=["Find {categories} in this {kind}."]),
            r"unknown field \{kind\}.*\{type\}, \{categories\}",
        ),
        (_good(user=["Find {categories} {0}."]), r"unknown field \{0\}"),
        (_good(user=["Find {categories} {"]), r"not a valid format string"),
        (_good(answer=["Sure."]), r"<SEG> exactly once"),
    ],
)
def test_malformed_template_file_names_the_file_and_the_problem(tmp_path, data, problem):
    from lavida.data.prompts import PromptTemplates

    path = _template_file(tmp_path, data)
    with pytest.raises(ValueError, match=problem) as info:
        PromptTemplates.load(path)
    assert str(path) in str(info.value)


def test_few_answer_templates_say_which_inference_index_to_pass(tmp_path):
    from lavida.data.prompts import PromptTemplates

    path = _template_file(tmp_path, _good())  # one answer: the default inference_answer=2 does not exist
    with pytest.raises(ValueError) as info:
        PromptTemplates.load(path)
    message = str(info.value)
    assert str(path) in message
    assert "inference_answer=2" in message and "1 answer template" in message
    assert "PromptTemplates.load(path, inference_answer=0)" in message
    templates = PromptTemplates.load(path, inference_answer=0)
    assert templates.render(["fire"], is_video=True).answer == "It is <SEG>.<|im_end|>"


def test_template_fields_other_than_type_and_categories_render(tmp_path):
    """Literal braces escaped as {{ }} are fine: the check formats the template as render does."""
    from lavida.data.prompts import PromptTemplates

    path = _template_file(tmp_path, _good(user=["Find {categories} in this {type} {{json}}."]))
    templates = PromptTemplates.load(path, inference_answer=0)
    assert "Find fire in this image {json}." in templates.render(["fire"], is_video=False).prompt


# -- LAVIDA_DATA_ROOT not set (a fresh shell) --------------------------------------------------------------


def _open_sources(caplog, **config):
    from lavida.data.config import DataConfig
    from lavida.data.train_dataset import open_train_sources

    with caplog.at_level(logging.WARNING, logger="lavida.data"):
        return open_train_sources(DataConfig.from_dict(config))


@pytest.mark.parametrize("missing_sources", ["renormalize", "error"])
def test_an_unset_data_root_is_said_first_and_once(caplog, missing_sources):
    """``lavida-train model=tiny data=tiny ...`` without LAVIDA_DATA_ROOT printed eleven near-identical
    warnings, then "None of the mixture's sources [...] is available", which never named the cause."""
    with pytest.raises(ValueError) as error:
        _open_sources(caplog, data_root=None, missing_sources=missing_sources)  # the official relative roots
    first = str(error.value).splitlines()[0]
    assert first.startswith("LAVIDA_DATA_ROOT (data.data_root) is not set"), first
    assert "vos" in first and "mapillary" in first and "data.data_root=DIR" in first
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_sources_left_out_for_an_unset_data_root_make_one_warning(caplog, synthetic_train_root):
    """One source with an absolute root trains; the rest, relative to the unset LAVIDA_DATA_ROOT, are one
    warning that names the cause, not one warning each."""
    from lavida.data.config import DEFAULT_ROOTS

    sources = {name: {"weight": 1.0, "root": root} for name, root in DEFAULT_ROOTS.items()}
    sources["synthetic"] = {"weight": 1.0, "root": str(synthetic_train_root)}
    opened = _open_sources(caplog, data_root=None, missing_sources="renormalize", sources=sources)
    assert opened.mixture.weights == {"synthetic": 1.0}
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "are not available; their 92% of the mixture is spread over ['synthetic']" in warning
    assert "LAVIDA_DATA_ROOT (data.data_root) is not set" in warning and "mapillary" in warning


def test_a_set_data_root_is_not_blamed(caplog, tmp_path):
    """With LAVIDA_DATA_ROOT set, the datasets missing under it are listed one by one, under one headline."""
    with pytest.raises(ValueError) as error:
        _open_sources(caplog, data_root=str(tmp_path), missing_sources="renormalize")
    message = str(error.value)
    assert message.startswith("None of the mixture's sources") and "is not set" not in message
    assert f"\n  mevis: dataset root '{tmp_path / 'MeViS'}' does not exist" in message  # named once


def test_a_source_without_any_root_is_not_blamed_on_the_data_root(caplog):
    """``root: null`` is a source with no folder at all: setting LAVIDA_DATA_ROOT would not help, so it is
    listed as its own problem rather than under the "LAVIDA_DATA_ROOT is not set" headline (which is for
    relative roots only)."""
    with pytest.raises(ValueError) as error:
        _open_sources(
            caplog, data_root=None, missing_sources="error", sources={"mevis": {"weight": 1.0, "root": None}}
        )
    assert str(error.value) == (
        "Training sources cannot be read:\n"
        "  mevis: no dataset folder: set LAVIDA_DATA_ROOT (or data.data_root) or an absolute data.sources.mevis.root\n"
        "Prepare them (data/README.md), or set their weight to 0 (data.sources.<name>.weight=0)."
    )


def test_an_unprepared_source_says_how_training_finds_a_manifest_prepared_elsewhere(caplog, tmp_path):
    """A dataset folder without <root>/.lavida/<name>_train.jsonl: the run says to prepare it, and how a
    manifest written elsewhere (lavida-prepare's out=, refvos' ytvos_root=) is pointed at. Only "run
    lavida-prepare" was said, which is wrong advice when the manifest exists in another folder."""
    write_segmentation_set(
        tmp_path / "synth", default_split(0), SegmentationSetSpec(videos=1, images=1, frames=2)
    )
    manifest = tmp_path / "synth" / ".lavida" / "synthetic_train.jsonl"
    with pytest.raises(ValueError) as error:
        _open_sources(
            caplog,
            missing_sources="error",
            sources={"synthetic": {"weight": 1.0, "root": str(tmp_path / "synth")}},
        )
    assert str(error.value) == (
        "Training sources cannot be read:\n"
        f"  synthetic: {manifest}: manifest not found. Run `lavida-prepare synthetic root={tmp_path / 'synth'}` "
        "first; one written elsewhere is read with data.manifest_dir=DIR or data.sources.synthetic.manifest=FILE, "
        "and lavida-prepare options that move it (ytvos_root= for refvos) go under data.sources.synthetic.options "
        "too.\n"
        "Prepare them (data/README.md), or set their weight to 0 (data.sources.<name>.weight=0)."
    )
