"""The Generate tab's reply columns in a browser (headless Chromium, see apputil): one row of equal columns on a
wide screen, five or six of them; three, then two a row where gradio narrows the page; one a row on a phone.
The per-token view under them follows the same grid."""

import pytest
from apputil import TIMEOUT_MS, app_engine, browser_page, launch

# (viewport width, columns a row)
WIDTHS = [(1400, None), (1100, 3), (900, 2), (400, 1)]  # None: all in one row

BOXES = """() => [...document.querySelectorAll('#reply-row > .column')].map(e => {
  const r = e.getBoundingClientRect(); return [Math.round(r.top), Math.round(r.left), Math.round(r.width)]; })"""
CELLS = BOXES.replace("#reply-row > .column", "#explain .tv-cell")


def rows(boxes: list[list[int]]) -> list[int]:
    """How many boxes each row holds, top to bottom."""
    tops = sorted({top for top, _, _ in boxes})
    return [sum(1 for top, _, _ in boxes if top == t) for t in tops]


@pytest.mark.slow
@pytest.mark.parametrize("stack, columns", [("stack-sep.toml", 5), ("stack-cond.toml", 6)])
def test_reply_columns_make_an_even_grid(browser, tiny_dir, tmp_path, stack, columns):
    demo, url = launch(app_engine(tiny_dir, stack), tmp_path / "study.db")
    try:
        with browser_page(browser) as page:
            page.goto(url + "?len=4&seed=1")
            page.wait_for_selector("#generate", timeout=TIMEOUT_MS)
            for width, per_row in WIDTHS:
                page.set_viewport_size({"width": width, "height": 1000})
                page.wait_for_timeout(200)
                boxes = page.evaluate(BOXES)
                per_row = per_row or columns
                assert rows(boxes) == [per_row] * (columns // per_row) + ([columns % per_row] if columns % per_row
                                                                          else []), (width, boxes)
                assert max(w for *_, w in boxes) - min(w for *_, w in boxes) <= 1, (width, boxes)  # equal widths
            page.set_viewport_size({"width": 1400, "height": 1000})
            page.locator("#generate").click()
            page.wait_for_function(f"() => document.querySelectorAll('#explain .tv-cell').length === {columns}",
                                   timeout=TIMEOUT_MS)
            assert rows(page.evaluate(CELLS)) == [columns]  # the per-token view: one row too
    finally:
        demo.close()
