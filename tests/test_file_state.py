"""lavida.file_state: the fingerprints caches and checkpoints compare.

``file_state`` is cheap (names, sizes, modification times, never the bytes: prediction folders hold
gigabytes); ``files_digest`` hashes content (names, sizes, bytes), for stand-ins rewritten in place.
Both are checked against SHA-256 computed here the obvious way, so a fingerprint recorded by one lavida
version still matches in the next.
"""

import hashlib
import json
import os

from lavida.file_state import file_state, files_digest


def _folder(root):
    (root / "sub").mkdir(parents=True)
    (root / "b.txt").write_bytes(b"second")
    (root / "sub" / "a.bin").write_bytes(b"\x00first")
    return root


def _expected_state(listing):
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]


def _expected_digest(entries):
    digest = hashlib.sha256()
    for name, content in entries:
        digest.update(f"{name}\0{len(content)}\0".encode() + content)
    return digest.hexdigest()[:16]


def test_file_state_of_a_folder_lists_every_file_under_it_by_relative_name_size_and_time(tmp_path):
    root = _folder(tmp_path / "predictions")
    listing = [
        [name, (root / name).stat().st_size, (root / name).stat().st_mtime_ns]
        for name in ("b.txt", "sub/a.bin")
    ]
    assert file_state(root) == {"path": str(root), "files": _expected_state(listing)}


def test_file_state_of_one_file_and_of_a_missing_path(tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"frames")
    stat = video.stat()
    assert file_state(video) == {
        "path": str(video),
        "files": _expected_state([["v.mp4", stat.st_size, stat.st_mtime_ns]]),
    }
    assert file_state(tmp_path / "gone.mp4") == {
        "path": str(tmp_path / "gone.mp4"),
        "files": _expected_state([]),
    }


def test_file_state_notices_a_rewrite_by_its_time_not_its_bytes(tmp_path):
    root = _folder(tmp_path / "predictions")
    before = file_state(root)
    file = root / "sub" / "a.bin"
    times = (file.stat().st_atime_ns, file.stat().st_mtime_ns)
    file.write_bytes(b"\x00FIRST")  # same size, same time: not read, so not noticed (cheap by design)
    os.utime(file, ns=times)
    assert file_state(root) == before
    os.utime(file, ns=(times[0], times[1] + 1_000_000_000))
    assert file_state(root) != before


def test_files_digest_of_a_folder_hashes_relative_names_sizes_and_bytes(tmp_path):
    root = _folder(tmp_path / "sam2")
    assert files_digest(root) == _expected_digest([("b.txt", b"second"), ("sub/a.bin", b"\x00first")])


def test_files_digest_of_one_file_names_it_without_its_folder(tmp_path):
    weights = tmp_path / "deep" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"weights" * 1000)
    assert files_digest(weights) == _expected_digest([("model.safetensors", b"weights" * 1000)])


def test_files_digest_changes_with_content_of_the_same_size_and_with_a_rename(tmp_path):
    root = _folder(tmp_path / "sam2")
    before = files_digest(root)
    (root / "b.txt").write_bytes(b"SECOND")
    assert files_digest(root) != before
    (root / "b.txt").write_bytes(b"second")
    assert files_digest(root) == before
    (root / "b.txt").rename(root / "c.txt")
    assert files_digest(root) != before


def test_files_digest_leaves_out_hidden_files_and_folders(tmp_path):
    """A file browser's .DS_Store or a notebook's .ipynb_checkpoints/ beside a checkpoint's files is no
    part of its weights: the digest stays the hand-computed one of the visible files. A visible file added
    still changes it."""
    root = _folder(tmp_path / "final")
    (root / ".DS_Store").write_bytes(b"finder")
    (root / ".ipynb_checkpoints").mkdir()
    (root / ".ipynb_checkpoints" / "meta-checkpoint.json").write_bytes(b"{}")
    (root / "sub" / ".hidden").write_bytes(b"x")
    assert files_digest(root) == _expected_digest([("b.txt", b"second"), ("sub/a.bin", b"\x00first")])
    (root / "c.txt").write_bytes(b"third")
    assert files_digest(root) == _expected_digest(
        [("b.txt", b"second"), ("c.txt", b"third"), ("sub/a.bin", b"\x00first")]
    )
