"""The page being written: its markdown lines, figures and the facts the verdicts read."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

STEERS = 0.5  # a weight–reward Spearman ρ below this does not count as steering
STEERS_WELL = 0.9  # the ρ a method should reach on every objective (the verdict counts the cells that do)


@dataclass
class Report:
    """The markdown being written and the figures it shows (written as PNG in one kaleido session)."""

    out: Path
    data: Path
    lines: list[str] = field(default_factory=list)
    figures: list[tuple[object, Path]] = field(default_factory=list)
    facts: dict[str, object] = field(default_factory=dict)  # tables the closing summary reads

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def table(self, df: pd.DataFrame, floatfmt: str = ".3f") -> None:
        """A markdown table (hand-written: pandas' to_markdown needs the extra 'tabulate' package)."""
        def cell(v) -> str:
            if isinstance(v, float):
                return "–" if np.isnan(v) else format(v, floatfmt)
            return str(v)
        cols = [str(c) for c in df.columns]
        self.add("| " + " | ".join(cols) + " |", "|" + "---|" * len(cols),
                 *("| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)), "")

    def figure(self, fig, name: str, alt: str) -> None:
        """Save ``fig`` as ``data/name.html`` now and as ``out/results/name.png`` later; link the PNG."""
        fig.write_html(self.data / f"{name}.html", include_plotlyjs="cdn")
        self.figures.append((fig, self.out.parent / "results" / f"{name}.png"))
        self.add(f"![{alt}](results/{name}.png)", "")

    def write(self, images: bool) -> None:
        if images and self.figures:
            import plotly.io as pio

            paths = [p for _, p in self.figures]
            paths[0].parent.mkdir(parents=True, exist_ok=True)
            try:
                pio.write_images([f for f, _ in self.figures], paths, width=760, height=520, scale=1)
            except Exception as err:  # kaleido raises its own types when no browser can be started
                raise ValueError(f"static images need kaleido and a Chrome/Chromium (apt-get install chromium), "
                                 f"or pass --no-images: {err}") from err
        self.out.write_text("\n".join(self.lines).rstrip() + "\n", encoding="utf-8")


def share(a: float, b: float) -> str:
    """``a`` as a percentage of ``b`` ("–" when ``b`` is not positive: nothing to be a share of)."""
    return f"{a / b:.0%}" if b > 0 and np.isfinite(a) else "–"


def rho_text(v: float) -> str:
    """A Spearman ρ to two places; "–" where it is undefined: the reward did not move at all with the weight.

    >>> rho_text(0.456), rho_text(float("nan"))
    ('0.46', '–')
    """
    return "–" if np.isnan(v) else f"{v:.2f}"
