"""The page's own CSS and JS, read from static/ (they are files so an editor and a linter see them as such)."""

from __future__ import annotations

import json
from pathlib import Path

from mavis_core.plots import TOKEN_VIEW_CSS, dark_template

from .controls import SHARE_PROMPT_BYTES

STATIC = Path(__file__).parent / "static"


def static(name: str) -> str:
    """A static file's text less its leading ``//`` comment lines (gradio runs a page script as one expression)."""
    lines = (STATIC / name).read_text(encoding="utf-8").splitlines()
    while lines and lines[0].startswith("//"):
        lines.pop(0)
    return "\n".join(lines)


def share_js(keys: list[str]) -> str:
    """JS run on every change of a shared control (its values in ``keys`` order): the query string follows them."""
    return static("share.js").replace("KEYS", json.dumps(keys)).replace("PROMPT_BYTES", str(SHARE_PROMPT_BYTES))


CSS = static("style.css") + static("participant.css") + TOKEN_VIEW_CSS
PAGE_JS = static("page.js").replace("DARK_TEMPLATE", json.dumps(dark_template()))
COPY_JS = static("copy.js")
