"""Source identity and input roots, on a real file tree with symlinks."""

from __future__ import annotations

import os

from storage.sources import canonical_source, outside_roots, source_spellings


def test_every_spelling_of_one_entry_is_one_identity(tmp_path, monkeypatch):
    (tmp_path / "real" / "clips").mkdir(parents=True)
    (tmp_path / "real" / "clips" / "a.mp4").write_bytes(b"x")
    os.symlink(tmp_path / "real", tmp_path / "alias")
    os.symlink(tmp_path / "real" / "clips" / "a.mp4", tmp_path / "real" / "clips" / "b.mp4")
    expected = str(tmp_path / "real" / "clips" / "a.mp4")
    monkeypatch.chdir(tmp_path / "real")
    for spelling in ("clips/a.mp4", "./clips/../clips/a.mp4", str(tmp_path / "alias" / "clips" / "a.mp4"),
                     f"file://{tmp_path}/real/clips/a.mp4"):
        assert canonical_source(spelling) == expected, spelling
    assert canonical_source("a.mp4", base=tmp_path / "alias" / "clips") == expected
    # A link is its own entry (its own row), but looking it up also finds what it points to.
    assert canonical_source("clips/b.mp4") == str(tmp_path / "real" / "clips" / "b.mp4")
    assert expected in source_spellings("clips/b.mp4")
    assert canonical_source("s3://bucket/clips/a.mp4") == "s3://bucket/clips/a.mp4"


def test_roots_follow_symlinks_and_s3_prefixes(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "secret").write_bytes(b"x")
    os.symlink(tmp_path / "secret", tmp_path / "in" / "link.mp4")
    (tmp_path / "in" / "ok.mp4").write_bytes(b"x")
    roots = [str(tmp_path / "in"), "s3://bucket/incoming"]
    assert not outside_roots(str(tmp_path / "in" / "ok.mp4"), roots)
    assert outside_roots(str(tmp_path / "in" / "link.mp4"), roots), "a link out of the root is outside"
    assert outside_roots(str(tmp_path / "in" / ".." / "secret"), roots)
    assert outside_roots(str(tmp_path / "in-other" / "x.mp4"), roots), "a sibling with the same prefix"
    assert not outside_roots("s3://bucket/incoming/a.mp4", roots)
    assert outside_roots("s3://bucket/incoming-other/a.mp4", roots)
    assert outside_roots("s3://other/a.mp4", roots)
    assert not outside_roots("s3://other/a.mp4", ["s3://"])
