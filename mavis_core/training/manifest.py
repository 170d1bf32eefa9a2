"""The embedded stack's manifest (``assets/manifest.json``) and the model card generated from it.

Each artifact records where it came from and how to rebuild it::

    {"artifacts": {"base": {"files": {"base/model.safetensors": {"sha256": "…", "bytes": 123}},
                            "source": "…", "licence": "MIT", "command": "python -m mavis_core build …",
                            "seed": 0, "metrics": {"val_perplexity": 31.2}, "card": "markdown"}}}

``MODEL_CARD.md`` is regenerated from the manifest, never edited by hand, so the two cannot drift.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MANIFEST = "manifest.json"
MODEL_CARD = "MODEL_CARD.md"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _expand(paths: list[str | Path]) -> list[Path]:
    """Files named directly, plus every file under each named folder."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file())
        elif p.is_file():
            out.append(p)
        else:
            raise ValueError(f"artifact file not found: {p}")
    return out


def _file_entries(assets_dir: Path, files: list[str | Path]) -> dict[str, dict]:
    """relpath (posix, relative to assets_dir) -> {"sha256", "bytes"} for every file."""
    root = assets_dir.resolve()
    entries = {}
    for f in _expand(files):
        f = f.resolve()
        if not f.is_relative_to(root):
            raise ValueError(f"artifact file {f} is outside the assets folder {root}")
        entries[f.relative_to(root).as_posix()] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
    return entries


def read_manifest(assets_dir: str | Path) -> dict:
    path = Path(assets_dir) / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"artifacts": {}}


def _write_json(path: Path, data: dict) -> None:
    # Write-then-rename so a reader never sees half a manifest.
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@contextmanager
def _locked(assets_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the assets folder: build steps of two engineers may run at once."""
    fd = os.open(assets_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def record_artifact(
    assets_dir: str | Path,
    name: str,
    files: list[str | Path],
    *,
    source: str,
    licence: str,
    command: str,
    seed: int,
    metrics: dict,
    card: str = "",
) -> dict:
    """Add or replace artifact ``name`` in ``assets_dir/manifest.json``; returns its entry.

    Args:
        files: files or folders inside ``assets_dir``; folders contribute every file below them.
        source: the data (and models) the artifact was built from.
        licence: licence of that source, e.g. "MIT".
        command: the exact command line that rebuilds it.
        metrics: name -> number (or short string), shown as a table in the model card.
        card: markdown for the artifact's section of MODEL_CARD.md (samples, caveats).
    """
    assets_dir = Path(assets_dir)
    assets_dir.mkdir(parents=True, exist_ok=True)
    entry = {
        "files": _file_entries(assets_dir, files), "source": source, "licence": licence,
        "command": command, "seed": seed, "metrics": metrics, "card": card,
    }
    with _locked(assets_dir):
        manifest = read_manifest(assets_dir)
        manifest.setdefault("artifacts", {})[name] = entry
        _write_json(assets_dir / MANIFEST, manifest)
    return entry


def verify_manifest(assets_dir: str | Path) -> list[str]:
    """Problems found (empty list: every recorded file exists with the recorded size and sha256)."""
    assets_dir = Path(assets_dir)
    if not (assets_dir / MANIFEST).exists():
        return [f"{assets_dir / MANIFEST} does not exist"]
    problems = []
    for name, art in sorted(read_manifest(assets_dir)["artifacts"].items()):
        for rel, want in sorted(art["files"].items()):
            path = assets_dir / rel
            if not path.is_file():
                problems.append(f"{name}: {rel} is missing")
            elif (size := path.stat().st_size) != want["bytes"]:
                problems.append(f"{name}: {rel} has {size} bytes, manifest says {want['bytes']}")
            elif sha256_file(path) != want["sha256"]:
                problems.append(f"{name}: {rel} sha256 differs from the manifest")
    return problems + _unrecorded_files(assets_dir)


def _unrecorded_files(assets_dir: Path) -> list[str]:
    """Files inside an artifact's folder that no artifact records (e.g. left over from an older build).

    Top-level files (manifest, model card, stack.toml) are not artifacts and are not checked.
    """
    recorded = {rel for art in read_manifest(assets_dir)["artifacts"].values() for rel in art["files"]}
    folders = {Path(rel).parent for rel in recorded} - {Path(".")}
    present = {f.relative_to(assets_dir).as_posix() for d in folders for f in (assets_dir / d).iterdir() if f.is_file()}
    return [f"{rel} is not recorded in the manifest" for rel in sorted(present - recorded)]


def _format_metric(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _artifact_section(name: str, art: dict) -> list[str]:
    size = sum(f["bytes"] for f in art["files"].values())
    lines = [
        f"## {name}", "",
        f"- **Source:** {art['source']}",
        f"- **Licence:** {art['licence']}",
        f"- **Rebuild:** `{art['command']}` (seed {art['seed']})",
        f"- **Files ({size / 1e6:.2f} MB):** " + ", ".join(f"`{f}`" for f in sorted(art["files"])),
        "",
    ]
    if art["metrics"]:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_format_metric(v)} |" for k, v in sorted(art["metrics"].items())]
        lines.append("")
    if art["card"].strip():
        lines += [art["card"].strip(), ""]
    return lines


def write_model_card(assets_dir: str | Path) -> Path:
    """Regenerate ``assets_dir/MODEL_CARD.md`` from the manifest; returns its path."""
    assets_dir = Path(assets_dir)
    artifacts = read_manifest(assets_dir)["artifacts"]
    total = sum(f["bytes"] for art in artifacts.values() for f in art["files"].values())
    lines = [
        "# Embedded stack: model card", "",
        "<!-- Generated from manifest.json by mavis_core.training.manifest.write_model_card -->",
        "",
        "The small models `python app.py` runs offline, built by `python -m mavis_core build` from data that "
        "the package registries ship. Every file's sha256 is in `manifest.json`.", "",
        f"Total size: {total / 1e6:.2f} MB in {len(artifacts)} artifact(s).", "",
    ]
    for name in sorted(artifacts):
        lines += _artifact_section(name, artifacts[name])
    path = assets_dir / MODEL_CARD
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return path
