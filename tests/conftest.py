"""Tiny random-weight stacks, built once per test session in a temp folder: fast and offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mavis_core import load_stack
from mavis_core.testing import (  # noqa: F401  (re-exported for the tests)
    OBJECTIVES,
    build_random_stack,
    build_tokenizer,
    save_policy,
    save_value_model,
    tiny_gpt2_config,
    write_stack,
)


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium context for every browser test of the session (its cache shared by their pages);
    the tests that use it are skipped where Chromium or Playwright is missing."""
    from apputil import browser_context

    with browser_context(accept_downloads=True) as context:
        yield context


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """Folders of a tiny stack: stack-sep.toml (a value model per objective) and stack-fused.toml."""
    return build_random_stack(tmp_path_factory.mktemp("tiny-stack"))


@pytest.fixture(scope="session")
def tiny_stack(tiny_dir):
    """Separate value models per objective, LoRA policies, GPT-2 reward models; float32 on the CPU."""
    return load_stack(tiny_dir / "stack-sep.toml", device=torch.device("cpu"))


@pytest.fixture(scope="session")
def fused_stack(tiny_dir):
    """The same stack with one fused value model serving all three objectives."""
    return load_stack(tiny_dir / "stack-fused.toml", device=torch.device("cpu"))


@pytest.fixture(scope="module")
def client(tiny_dir, tmp_path_factory):
    """A gradio_client Client of the app launched in-process on the tiny stack (one server per test module)."""
    from apputil import app_engine, launch
    from gradio_client import Client

    demo, url = launch(app_engine(tiny_dir), tmp_path_factory.mktemp("study") / "study.db")
    yield Client(url, verbose=False, analytics_enabled=False)
    demo.close()
