"""Helpers shared by the app tests: a tiny stack file the app can serve, and launching on a free port."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # tests run offline: no phoning home
import app  # noqa: E402
from app.page import CSS  # noqa: E402
from mavis_core import load_stack  # noqa: E402
from mavis_core.engine import Engine  # noqa: E402
from mavis_core.testing import STACK_METHODS  # noqa: E402

TOKEN = "s3cret"
CHROMIUM = "/usr/bin/chromium"  # Debian's: the tests never download a browser
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# The tiny stack's columns: its methods and Prompted (stack-sep has no references and no conditioned policy).
METHODS = [*STACK_METHODS, "prompted"]
# /generate's outputs: each column's text, then each column's stats, then the per-token view, the chart and the
# sample dropdown.
N = len(METHODS)
TOKENS, CHART, SAMPLES = 2 * N, 2 * N + 1, 2 * N + 2
RATINGS = 3 * N  # a study trial's rating inputs: a reply per column, each on the tiny stack's 3 objectives
TIMEOUT_MS = 180_000  # generous: CI machines share 2 cores with model training


@contextlib.contextmanager
def browser_context(**options) -> Iterator:
    """A Playwright context of headless Chromium; the test is skipped where Chromium or Playwright is missing.
    Pages opened in one context share its HTTP cache: a later page loads the app's scripts from it (about
    1 s against 3-5 s cold on 2 cores). ``options`` go to ``new_context`` (e.g. ``accept_downloads=True``)."""
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_context(**options)
        finally:
            browser.close()


@contextlib.contextmanager
def browser_page(context, width: int = 1400, height: int = 1000) -> Iterator:
    """A page at ``width`` × ``height`` in ``context`` (the session's shared :func:`browser_context`)."""
    page = context.new_page()
    try:
        page.set_viewport_size({"width": width, "height": height})
        yield page
    finally:
        page.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_engine(tiny_dir: Path, name: str = "stack-sep.toml") -> Engine:
    """The tiny stack (``name``) with its reward models capped at their 64-position context: replies of random
    models re-tokenize into long texts, and the default reward max_length (512) would overrun the position table."""
    text = (tiny_dir / name).read_text()
    text = re.sub(r'(path = "rewards/\w+")', r"\1, max_length = 64", text)
    path = tiny_dir / f"app-{name}"
    path.write_text(text)
    return Engine(load_stack(path, device=torch.device("cpu")))


def launch(engine: Engine, study_db: Path):
    """The app serving in this process; returns (demo, url). Close with ``demo.close()``."""
    demo = app.build_demo(engine, study_db, admin_token=TOKEN)
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, css=CSS)
    return demo, f"http://127.0.0.1:{port}/"
