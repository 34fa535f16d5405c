"""lavida.settings_diff: the changed settings of two cache records, named by their dotted keys."""

from pathlib import Path

from lavida.settings_diff import changed_settings


def test_nested_settings_are_named_by_their_dotted_key():
    was = {"threshold": 0.5, "base_models": {"mllm": "a", "sam2": "b"}, "categories": ["fire"]}
    now = {"threshold": 0.3, "base_models": {"mllm": "a", "sam2": "c"}, "categories": ["fire"], "fps": None}
    assert changed_settings(was, now) == [
        "base_models.sam2 was 'b', now 'c'",
        "fps was absent, now None",
        "threshold was 0.5, now 0.3",
    ]
    assert changed_settings(was, dict(was)) == []


def test_values_differ_as_the_caches_hash_them():
    """1, 1.0 and True are equal in Python but not in the JSON the caches hash: named, not 'unknown'."""
    assert changed_settings({"x": 1}, {"x": 1.0}) == ["x was 1, now 1.0"]
    assert changed_settings({"x": 1}, {"x": True}) == ["x was 1, now True"]
    assert changed_settings({"x": {"y": 1}}, {"x": 5}) == ["x was {'y': 1}, now 5"]
    assert changed_settings({"x": [1, 2]}, {"x": [2, 1]}) == ["x was [1, 2], now [2, 1]"]


def test_dicts_inside_lists_compare_by_content_not_key_order():
    """The eval cache hashes its facts with ``sort_keys=True`` (lavida/eval/result_cache.py): two records whose
    only difference is the key order of a dict inside a list are the same settings."""
    was = {"sources": [{"name": "a", "fps": 10}]}
    now = {"sources": [{"fps": 10, "name": "a"}]}
    assert changed_settings(was, now) == []


def test_values_json_cannot_take_are_compared_as_their_text(tmp_path):
    """The caches hash with ``default=str`` (lavida/eval/result_cache.py): a Path is compared as its text, not
    refused with a TypeError."""
    a, b = tmp_path / "a", tmp_path / "b"
    assert changed_settings({"root": a}, {"root": Path(a)}) == []
    assert changed_settings({"root": a}, {"root": str(a)}) == []
    assert changed_settings({"root": a}, {"root": b}) == [f"root was {a!r}, now {b!r}"]
