"""The manifest: shipped assets match their recorded sha256; tampering and missing files are caught."""

import json
import shutil
from pathlib import Path

import pytest

from mavis_core.training.manifest import (
    MANIFEST,
    MODEL_CARD,
    read_manifest,
    record_artifact,
    sha256_file,
    verify_manifest,
    write_model_card,
)

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SHIPPED = [ASSETS, ASSETS / "tiny"]  # the default stack and the tiny fallback, each with its own manifest


def _record(assets: Path, name: str = "thing", card: str = "") -> dict:
    return record_artifact(assets, name, [assets / name], source="unit test", licence="MIT",
                           command="python make_thing.py", seed=3, metrics={"score": 0.123456}, card=card)


@pytest.fixture
def tiny_assets(tmp_path: Path) -> Path:
    (tmp_path / "thing").mkdir()
    (tmp_path / "thing" / "weights.bin").write_bytes(b"\x00\x01\x02")
    (tmp_path / "thing" / "config.json").write_text("{}")
    return tmp_path


@pytest.mark.parametrize("assets", SHIPPED, ids=["default", "tiny"])
def test_shipped_assets_match_the_manifest(assets: Path):
    assert verify_manifest(assets) == []
    artifacts = read_manifest(assets)["artifacts"]
    for art in artifacts.values():
        assert art["source"] and art["licence"] and art["command"].startswith("python -m mavis_core")


@pytest.mark.parametrize("assets", SHIPPED, ids=["default", "tiny"])
def test_tampering_with_a_copy_of_the_shipped_assets_is_detected(assets: Path, tmp_path: Path):
    copy = tmp_path / "assets"
    shutil.copytree(assets, copy, ignore=shutil.ignore_patterns("tiny"))
    rel = sorted(f for art in read_manifest(copy)["artifacts"].values() for f in art["files"])[0]
    data = bytearray((copy / rel).read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes: only the hash can tell
    (copy / rel).write_bytes(bytes(data))
    assert verify_manifest(copy) == [f"{name}: {rel} sha256 differs from the manifest"
                                     for name, art in read_manifest(copy)["artifacts"].items() if rel in art["files"]]


def test_record_lists_every_file_of_a_folder_with_its_hash(tiny_assets: Path):
    entry = _record(tiny_assets)
    assert sorted(entry["files"]) == ["thing/config.json", "thing/weights.bin"]
    assert entry["files"]["thing/weights.bin"] == {
        "sha256": sha256_file(tiny_assets / "thing" / "weights.bin"), "bytes": 3,
    }
    assert read_manifest(tiny_assets)["artifacts"]["thing"] == entry
    assert verify_manifest(tiny_assets) == []


def test_recording_again_is_byte_stable_and_keeps_other_artifacts(tiny_assets: Path):
    (tiny_assets / "other").mkdir()
    (tiny_assets / "other" / "a.txt").write_text("a")
    _record(tiny_assets)
    _record(tiny_assets, "other")
    first = (tiny_assets / MANIFEST).read_text()
    _record(tiny_assets)
    assert (tiny_assets / MANIFEST).read_text() == first
    assert list(json.loads(first)["artifacts"]) == ["other", "thing"]


def test_verify_reports_changed_size_and_missing_files(tiny_assets: Path):
    _record(tiny_assets)
    (tiny_assets / "thing" / "weights.bin").write_bytes(b"\x00")
    (tiny_assets / "thing" / "config.json").unlink()
    assert verify_manifest(tiny_assets) == [
        "thing: thing/config.json is missing",
        "thing: thing/weights.bin has 1 bytes, manifest says 3",
    ]


def test_files_outside_the_assets_folder_are_rejected(tiny_assets: Path, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere") / "x.bin"
    outside.write_bytes(b"x")
    with pytest.raises(ValueError, match="outside the assets folder"):
        record_artifact(tiny_assets, "x", [outside], source="s", licence="MIT", command="c", seed=0, metrics={})


def test_model_card_shows_metrics_and_card_text(tiny_assets: Path):
    _record(tiny_assets, card="Trained on **nothing**.")
    text = write_model_card(tiny_assets).read_text()
    assert (tiny_assets / MODEL_CARD).exists()
    assert "## thing" in text and "| score | 0.1235 |" in text and "Trained on **nothing**." in text
    assert "`python make_thing.py` (seed 3)" in text


def test_verify_reports_files_no_artifact_records(tiny_assets: Path):
    _record(tiny_assets)
    (tiny_assets / "thing" / "stale.bin").write_bytes(b"old")
    (tiny_assets / "notes.txt").write_text("top-level files are not artifacts")
    assert verify_manifest(tiny_assets) == ["thing/stale.bin is not recorded in the manifest"]
