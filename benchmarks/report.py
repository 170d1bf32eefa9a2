"""How the benchmarks print a table of result rows: one JSON object (``--json``, for scripts) or a header and a
line per row. Imported by the scripts beside it (``python benchmarks/NAME.py`` puts this folder on the path)."""

from __future__ import annotations

import json
from collections.abc import Callable


def print_rows(rows: dict[str, dict], as_json: bool, header: str, line: Callable[[str, dict], str]) -> None:
    """Print ``rows`` (name → figures) as JSON, or ``header`` then ``line(name, figures)`` for each row."""
    if as_json:
        print(json.dumps(rows))
        return
    print(header)
    for name, row in rows.items():
        print(line(name, row))
