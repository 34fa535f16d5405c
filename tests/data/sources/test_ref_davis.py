"""Refer-DAVIS-17: the converted layout, the raw release read directly, and the raw → converted converter."""

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from video_trees import SIZE, records_by_key, write_davis_raw_tree, write_label, write_ref_davis_tree

from lavida.data.sources.base import DatasetFormatError
from lavida.data.sources.ref_davis import (
    TEXT_ANNOTATION_FILES,
    RefDAVISSource,
    convert_davis,
    read_raw_split,
    read_text_annotations,
)


@pytest.fixture
def tree(tmp_path):
    return write_ref_davis_tree(tmp_path / "ref_davis")


@pytest.fixture
def raw(tmp_path):
    return write_davis_raw_tree(tmp_path / "davis_raw")


def assert_masks_match(source, records, masks):
    for video, record in records.items():
        every = list(range(len(record.frames)))
        for target in record.targets:
            expected = masks[video][target.mask["values"][0]]
            loaded = source.load_masks(record, target, every)
            np.testing.assert_array_equal(loaded, expected)
            assert loaded.any(axis=(1, 2)).nonzero()[0].tolist() == list(target.frames)


def test_converted_layout_records_and_masks(tree):
    source = RefDAVISSource(tree["root"])
    records = records_by_key(source)
    assert sorted(records) == ["bike-packing", "dog"]
    bike = records["bike-packing"]
    assert (
        bike.source == "refdavis"
        and bike.group == "refdavis/bike-packing"
        and bike.meta["size"] == list(SIZE)
    )
    assert bike.frames == tuple(
        f"train/JPEGImages/bike-packing/{stem}.jpg" for stem in tree["frames"]["train"]["bike-packing"]
    )
    assert [t.mask["values"] for t in bike.targets] == [[1]] * 4 + [[2]] * 4  # 4 expressions per object
    assert bike.targets[7].text == "the bicycle ridden by the man"  # normalised
    assert bike.targets[4].frames == (1, 2)  # visible frames read from the annotations
    assert bike.present == tuple(t.text for t in bike.targets)
    assert_masks_match(source, records, tree["masks"]["train"])
    assert not source.load_masks(records["dog"], records["dog"].targets[0], [1]).any()  # absent frame


def test_valid_split(tree):
    source = RefDAVISSource(tree["root"], split="valid")
    records = records_by_key(source)
    assert sorted(records) == ["blackswan"]
    assert records["blackswan"].frames[0] == "valid/JPEGImages/blackswan/00000.jpg"
    assert_masks_match(source, records, tree["masks"]["valid"])


def test_text_annotations_quirks(raw):
    videos = read_text_annotations(raw["root"] / "davis_text_annotations")
    assert "clasic-car" not in videos and "dog-scale" not in videos  # misspelt names fixed
    assert videos["classic-car"][1] == [
        "a white car",
        "a white car parked",
        "the white café racer",  # latin-1 line decoded
        "a white car, façade behind it.",
    ]
    assert videos["classic-car"][2] == [
        "a man walking",
        "a man walking past the car",
        "a man in black",
        "the man",
    ]
    assert videos["dogs-scale"][1][2] == "dog"


def test_converter_writes_the_referformer_layout(raw, tmp_path):
    out = tmp_path / "converted"
    assert convert_davis(raw["root"], out) == {"train": 2, "valid": 1}
    for split in ("train", "valid"):
        written = json.loads(
            (out / "meta_expressions" / split / "meta_expressions.json").read_text(encoding="utf-8")
        )
        assert written == raw["meta_expressions"][split]
    car = json.loads((out / "meta_expressions/train/meta_expressions.json").read_text())["videos"][
        "classic-car"
    ]
    assert [(k, e["obj_id"]) for k, e in car["expressions"].items()] == [
        (str(i), "1" if i < 4 else "2") for i in range(8)
    ]
    assert car["expressions"]["2"]["exp"] == "the white café racer" and car["frames"] == [
        "00000",
        "00001",
        "00002",
        "00003",
    ]
    assert "unknown-video" not in json.dumps(car)
    meta = json.loads((out / "train/meta.json").read_text())
    assert meta == {"videos": {"classic-car": {"objects": {"1": {"category": "car"}, "2": {"category": "person"}}},
                               "dogs-scale": {"objects": {"1": {"category": "dog"}}}}}  # fmt: skip
    for video in ("classic-car", "dogs-scale"):
        for raw_folder, folder in (("JPEGImages", "JPEGImages"), ("Annotations_unsupervised", "Annotations")):
            for path in (raw["root"] / "DAVIS" / raw_folder / "480p" / video).iterdir():
                assert (out / "train" / folder / video / path.name).read_bytes() == path.read_bytes()
    assert (out / "valid/JPEGImages/blackswan/00001.jpg").is_file()
    assert (raw["root"] / "DAVIS/JPEGImages/480p/classic-car").is_dir()  # never moved
    # The converted tree is what the source reads.
    source = RefDAVISSource(out)
    records = records_by_key(source)
    assert sorted(records) == ["classic-car", "dogs-scale"]
    assert_masks_match(source, records, raw["masks"])


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_converter_link_modes(raw, tmp_path, link):
    out = tmp_path / "converted"
    convert_davis(raw["root"], out, link=link)
    convert_davis(raw["root"], out, link=link)  # re-running replaces its own output
    frame = out / "train/JPEGImages/dogs-scale/00000.jpg"
    assert frame.read_bytes() == (raw["root"] / "DAVIS/JPEGImages/480p/dogs-scale/00000.jpg").read_bytes()
    if link == "symlink":
        assert (out / "train/JPEGImages/dogs-scale").is_symlink()
    else:
        assert frame.stat().st_nlink == 2
    with pytest.raises(ValueError, match="link must be one of"):
        convert_davis(raw["root"], out, link="move")


def test_raw_layout_is_read_directly(raw, tmp_path):
    source = RefDAVISSource(raw["root"])
    records = records_by_key(source, artifacts=tmp_path / "artefacts")
    assert sorted(records) == ["classic-car", "dogs-scale"]
    car = records["classic-car"]
    assert car.frames[0] == "DAVIS/JPEGImages/480p/classic-car/00000.jpg"  # no copy needed
    assert car.targets[0].mask["paths"][0] == "DAVIS/Annotations_unsupervised/480p/classic-car/00000.png"
    assert [t.text for t in car.targets][:4] == [
        "a white car",
        "a white car parked",
        "the white café racer",
        "a white car, façade behind it",
    ]
    assert_masks_match(source, records, raw["masks"])
    written = json.loads(
        (tmp_path / "artefacts/ref_davis/meta_expressions/train/meta_expressions.json").read_text()
    )
    assert written == raw["meta_expressions"]["train"]
    # Same records as from the converted tree, up to the folder names.
    out = tmp_path / "converted"
    convert_davis(raw["root"], out)
    converted = records_by_key(RefDAVISSource(out))
    for video, record in records.items():
        assert [(t.text, t.mask["values"], t.frames) for t in record.targets] == [
            (t.text, t.mask["values"], t.frames) for t in converted[video].targets
        ]
        assert record.present == converted[video].present
    assert sorted(records_by_key(RefDAVISSource(raw["root"], split="valid"), artifacts=tmp_path / "a")) == [
        "blackswan"
    ]


def test_malformed_text_line_names_file_and_line(raw):
    path = raw["root"] / "davis_text_annotations/Davis17_annot1_full_video.txt"
    path.write_bytes(path.read_bytes() + b"blackswan\r\n")
    with pytest.raises(DatasetFormatError, match=r"Davis17_annot1_full_video\.txt, line 6: expected"):
        list(RefDAVISSource(raw["root"]).index())
    with pytest.raises(DatasetFormatError, match=r"Davis17_annot1_full_video\.txt, line 6"):
        convert_davis(raw["root"], raw["root"] / "out")
    path.unlink()
    with pytest.raises(DatasetFormatError, match=r"Davis17_annot1_full_video\.txt: file not found"):
        list(RefDAVISSource(raw["root"]).index())


def test_missing_raw_folders_name_them(raw, tmp_path):
    shutil.rmtree(raw["root"] / "DAVIS/Annotations_unsupervised/480p/dogs-scale")
    with pytest.raises(
        DatasetFormatError, match=r"Annotations_unsupervised/480p/dogs-scale: folder not found"
    ):
        list(RefDAVISSource(raw["root"]).index())
    with pytest.raises(
        DatasetFormatError, match=r"Annotations_unsupervised/480p/dogs-scale: folder not found"
    ):
        convert_davis(raw["root"], tmp_path / "out")
    (raw["root"] / "DAVIS/ImageSets/2017/train.txt").unlink()
    with pytest.raises(DatasetFormatError, match=r"ImageSets/2017/train\.txt: file not found"):
        list(RefDAVISSource(raw["root"]).index())
    with pytest.raises(DatasetFormatError, match=r"point raw_root at the folder"):
        convert_davis(tmp_path, tmp_path / "out")


@pytest.mark.parametrize(
    "removed, message",
    [
        (
            "DAVIS/JPEGImages/480p/classic-car/00002.jpg",
            r"JPEGImages/480p/classic-car: 1 of the video's 4 frames have no '\*\.jpg' file \(first: 00002\.jpg\)",
        ),
        (
            "DAVIS/Annotations_unsupervised/480p/classic-car/00001.png",
            r"Annotations_unsupervised/480p/classic-car: 1 of the video's 4 frames have no '\*\.png' file "
            r"\(first: 00001\.png\)",
        ),
    ],
)
def test_raw_layout_refuses_a_frame_missing_a_file(raw, tmp_path, removed, message):
    """A missing JPEG was skipped: the frames became 00000, 00001, 00003 (a silent gap in time) and the
    annotation 00002.png went unread. DAVIS has both files for every frame; the other video sources
    refuse the same damage with the same words, and skip_errors skips the video."""
    (raw["root"] / removed).unlink()
    with pytest.raises(DatasetFormatError, match=message):
        list(RefDAVISSource(raw["root"]).index(artifacts=tmp_path / "a"))
    records = records_by_key(RefDAVISSource(raw["root"]), artifacts=tmp_path / "a", skip_errors=True)
    assert sorted(records) == ["dogs-scale"]


def test_neither_layout_explains_both(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetFormatError, match="converted Ref-DAVIS folder .* or at the raw one"):
        list(RefDAVISSource(tmp_path / "empty").index())


def test_corrupt_annotation_names_the_file(tree):
    (tree["root"] / "train/Annotations/dog/00001.png").write_bytes(b"broken")
    with pytest.raises(DatasetFormatError, match=r"Annotations/dog/00001\.png: cannot read"):
        list(RefDAVISSource(tree["root"]).index())


def test_skip_errors_logs_a_count_and_continues(tree, caplog):
    (tree["root"] / "train/JPEGImages/dog/00002.jpg").unlink()
    with caplog.at_level(logging.WARNING, logger="lavida.data.sources"):
        records = records_by_key(RefDAVISSource(tree["root"]), skip_errors=True)
    assert sorted(records) == ["bike-packing"]
    assert "skipped 1 of 2 videos" in caplog.text


def test_only_a_pair_of_enclosing_quotes_is_removed(tmp_path):
    """Each line is ``<video> <object id> "<expression>"``; the quotes go only when they enclose the text,
    so an unquoted text (or a stray quote) is kept as written and ``""`` is an empty expression."""
    lines = ['dog 1 "a dog"', "dog 2 a dog without quotes", 'dog 3 ""', 'dog 4 "']
    for name in TEXT_ANNOTATION_FILES:
        (tmp_path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    videos = read_text_annotations(tmp_path)
    # Each of the four files gives every object one line, so four copies per object.
    assert videos == {"dog": {1: ["a dog"] * 4, 2: ["a dog without quotes"] * 4, 3: [""] * 4, 4: ['"'] * 4}}


def test_a_split_video_without_text_lines_is_left_out_with_a_warning(raw, tmp_path, caplog):
    """ReferFormer's converter raises KeyError on a split video that no text file mentions; we leave it
    out and say so, naming the split, the text folder and the video. It is listed first: the videos after
    it are still read."""
    split_file = raw["root"] / "DAVIS/ImageSets/2017/train.txt"
    split_file.write_text("no-text-video\n" + split_file.read_text())
    with caplog.at_level(logging.WARNING, logger="lavida.data.sources"):
        records = records_by_key(RefDAVISSource(raw["root"]), artifacts=tmp_path / "a")
    assert sorted(records) == ["classic-car", "dogs-scale"]
    text_dir = raw["root"] / "davis_text_annotations"
    expected = f"refdavis: 1 train videos have no line in {text_dir} and are left out (first: no-text-video)."
    assert expected in [record.getMessage() for record in caplog.records]


def test_converting_without_semantics_warns_and_writes_no_meta_json(raw, tmp_path, caplog):
    """davis_semantics.json (the semantics zip) is optional: without it the converted tree has no
    meta.json, which must be said, since ReferFormer-layout tools expect one."""
    semantics = raw["root"] / "DAVIS/davis_semantics.json"
    semantics.unlink()
    out = tmp_path / "converted"
    with caplog.at_level(logging.WARNING, logger="lavida.data.sources"):
        assert convert_davis(raw["root"], out) == {"train": 2, "valid": 1}
    assert not (out / "train/meta.json").exists() and not (out / "valid/meta.json").exists()
    expected = f"refdavis: {semantics} not found; the converted tree gets no meta.json."
    assert [record.getMessage() for record in caplog.records] == [expected]


def test_left_out_expressions_and_videos_are_counted_exactly_in_the_log(tree, caplog):
    """The prepare log is how a user learns how much was dropped, so each count must be exact (a
    substring check like "1 videos" also matches "-1 videos")."""
    # Hand count: dog's 4 expressions and one of bike-packing's name object 7, on no annotation (5 left
    # out); dog is then left without a target (1 video).
    path = tree["root"] / "meta_expressions/train/meta_expressions.json"
    data = json.loads(path.read_text())
    for expression in data["videos"]["dog"]["expressions"].values():
        expression["obj_id"] = "7"
    data["videos"]["bike-packing"]["expressions"]["0"]["obj_id"] = "7"
    path.write_text(json.dumps(data))
    with caplog.at_level(logging.INFO, logger="lavida.data.sources"):
        records = records_by_key(RefDAVISSource(tree["root"]))
    assert sorted(records) == ["bike-packing"] and len(records["bike-packing"].targets) == 7
    messages = [record.getMessage() for record in caplog.records]
    assert "refdavis: 5 expressions refer to an object absent from every annotation; left out." in messages
    assert "refdavis: 1 videos have no usable expression and are left out." in messages


def test_a_first_video_without_a_usable_expression_leaves_the_next_one_read(tree):
    """Every expression of bike-packing (read first) names object 7, on no annotation: dog is still read."""
    path = tree["root"] / "meta_expressions/train/meta_expressions.json"
    data = json.loads(path.read_text())
    assert list(data["videos"]) == ["bike-packing", "dog"]
    for expression in data["videos"]["bike-packing"]["expressions"].values():
        expression["obj_id"] = "7"
    path.write_text(json.dumps(data))
    assert sorted(records_by_key(RefDAVISSource(tree["root"]))) == ["dog"]


def test_a_video_entry_without_expressions_or_exp_names_the_expressions_file(tree):
    """A malformed entry of meta_expressions.json is refused with the file and video named, not with a
    bare AttributeError that skip_errors cannot skip."""
    path = tree["root"] / "meta_expressions/train/meta_expressions.json"
    data = json.loads(path.read_text())
    del data["videos"]["dog"]["expressions"]
    path.write_text(json.dumps(data))
    expected = f'{path}: video dog needs an "expressions" mapping and a "frames" list.'
    with pytest.raises(DatasetFormatError, match=re.escape(expected)):
        list(RefDAVISSource(tree["root"]).index())
    data["videos"]["dog"]["expressions"] = {"0": {"exp": None, "obj_id": "1"}}
    path.write_text(json.dumps(data))
    expected = f'{path}: video dog, expression 0: no "exp" string.'
    with pytest.raises(DatasetFormatError, match=re.escape(expected)):
        list(RefDAVISSource(tree["root"]).index())


def test_converted_expressions_keep_non_ascii_text_readable(raw, tmp_path):
    """The converted meta_expressions.json is written as UTF-8 text, not \\u escapes, so the latin-1
    lines of the annot2 files read as written ("café") when the file is inspected."""
    out = tmp_path / "converted"
    convert_davis(raw["root"], out)
    text = (out / "meta_expressions/train/meta_expressions.json").read_text(encoding="utf-8")
    assert '"the white café racer"' in text and "\\u00e9" not in text


def test_a_later_annotation_of_another_size_names_the_file(tree):
    """Indexing reads every annotation (DAVIS's meta.json has no frame lists), so an annotation whose
    size differs from the video's frames is refused there, naming it, not when a clip is loaded."""
    png = tree["root"] / "train/Annotations/dog/00002.png"
    write_label(png, np.zeros((12, 16), np.uint8))
    expected = f"{png}: annotation is (12, 16), the video's frames are (24, 32)."
    with pytest.raises(DatasetFormatError, match=re.escape(expected)):
        list(RefDAVISSource(tree["root"]).index())


def test_an_object_id_that_is_not_a_number_names_file_and_line(raw):
    path = raw["root"] / "davis_text_annotations/Davis17_annot1_full_video.txt"
    path.write_bytes(path.read_bytes() + b"blackswan one a black swan\r\n")
    with pytest.raises(
        DatasetFormatError,
        match=re.escape(f"{path}, line 6: object id 'one' is not an integer."),
    ):
        read_text_annotations(path.parent)


def test_an_unreadable_text_file_names_it(raw, monkeypatch):
    """A text file that exists but cannot be read (no permission: not reproducible as root, hence the
    patched read) is a format error naming it, which skip_errors and lavida-prepare report."""
    path = raw["root"] / "davis_text_annotations" / TEXT_ANNOTATION_FILES[1]
    real_read_bytes = Path.read_bytes

    def read_bytes(self):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(DatasetFormatError, match=re.escape(f"{path}: cannot read the file ([Errno 13]")):
        read_text_annotations(path.parent)


def test_an_unknown_raw_split_is_refused(raw):
    with pytest.raises(ValueError, match=r"refdavis: split 'test' is not one of \['train', 'valid'\]"):
        read_raw_split(raw["root"], "test")


def test_symlinking_over_a_copied_conversion_is_refused_and_copying_replaces_links(raw, tmp_path):
    """A symlink conversion never deletes a real folder (it may be the only copy of edited frames); a
    copy conversion replaces the links an earlier symlink conversion left, without touching the raw
    frames they point to."""
    out = tmp_path / "converted"
    convert_davis(raw["root"], out)
    folder = out / "train/JPEGImages/classic-car"
    with pytest.raises(FileExistsError, match=re.escape(f"{folder}: exists and is not a symlink")):
        convert_davis(raw["root"], out, link="symlink")
    shutil.rmtree(out)
    convert_davis(raw["root"], out, link="symlink")
    assert folder.is_symlink()
    convert_davis(raw["root"], out, link="copy")
    assert folder.is_dir() and not folder.is_symlink()
    raw_frame = raw["root"] / "DAVIS/JPEGImages/480p/classic-car/00000.jpg"
    assert (folder / "00000.jpg").read_bytes() == raw_frame.read_bytes()


def test_an_expression_without_words_is_left_out(tree):
    """An "exp" that normalises to nothing (" . ") is no target; the video's other expressions stay."""
    path = tree["root"] / "meta_expressions/train/meta_expressions.json"
    data = json.loads(path.read_text())
    expressions = data["videos"]["dog"]["expressions"]
    expressions["0"]["exp"] = " . "
    path.write_text(json.dumps(data))
    dog = records_by_key(RefDAVISSource(tree["root"]))["dog"]
    kept = [e["exp"] for key, e in expressions.items() if key != "0"]
    assert [t.text for t in dog.targets] == kept
