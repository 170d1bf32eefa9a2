"""Steer a language model between objectives at inference time: MAVIS, MOD, RSoup and the base side by side."""

from __future__ import annotations

import importlib

# Imported on first use (PEP 562), so that the modules that need no torch (the study database, the arena,
# the prompts) load in well under a second: a study-writer process or `app.py --help` does not pay for torch.
_EXPORTS = {"DecodeConfig": "config", "Generation": "decoding", "TokenEvent": "decoding", "generate": "decoding",
            "generate_batch": "decoding", "generate_reply": "decoding", "Stack": "stack", "load_stack": "stack"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
