"""The app in a real browser: Playwright driving Debian's headless Chromium (/usr/bin/chromium, never a
downloaded browser). Loads the page, sees a bad prompt refused, moves a slider, clicks Generate, waits for
every column and the chart, and saves a screenshot."""

import shutil

import pytest
from apputil import app_engine, launch

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
METHODS = ["base", "mavis", "mod", "rsoup"]
TIMEOUT_MS = 180_000  # generous: CI machines share 2 cores with model training


@pytest.fixture(scope="module")
def url(tiny_dir, tmp_path_factory):
    demo, url = launch(app_engine(tiny_dir), tmp_path_factory.mktemp("study") / "study.db")
    yield url
    demo.close()


@pytest.fixture()
def page():
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1200})
        yield page
        browser.close()


@pytest.mark.slow
def test_slider_generate_columns_and_chart(url, page, tmp_path):
    page.goto(url)
    page.wait_for_selector("#generate", timeout=TIMEOUT_MS)
    prompt = page.locator("#prompt textarea")
    prompt.fill("   ")
    page.locator("#generate").click()  # a bad prompt: a plain error toast, and the page keeps working
    page.get_by_text("The prompt is empty").wait_for(timeout=TIMEOUT_MS)
    prompt.fill("hello there")

    assert "humor 0.33" in page.locator("#lambda").inner_text()
    humor = page.locator("#weight-humor input[type=range]")
    humor.focus()
    for _ in range(6):  # the keyboard moves the slider the way a user's arrow keys do
        humor.press("ArrowRight")
    # (0.5 + 6 · 0.05) / (1.5 + 6 · 0.05): the normalised λ follows the slider
    page.wait_for_function("() => document.querySelector('#lambda').innerText.includes('humor 0.44')",
                           timeout=TIMEOUT_MS)

    page.locator("#generate").click()
    for m in METHODS:
        page.wait_for_function(f"() => document.querySelector('#reply-{m} textarea').value.length > 0",
                               timeout=TIMEOUT_MS)
        page.wait_for_function(f"() => document.querySelector('#stats-{m}').innerText.includes('KL')",
                               timeout=TIMEOUT_MS)
    page.wait_for_selector("#pareto .scatterlayer .point", timeout=TIMEOUT_MS)
    assert page.locator("#pareto .scatterlayer .point").count() >= len(METHODS)
    assert page.locator("#explain span[title]").count() > 0  # the MAVIS tokens, each with its hover text
    page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
    assert (tmp_path / "app.png").stat().st_size > 10_000


@pytest.mark.slow
def test_generate_and_replies_above_the_fold_and_presets(url, page, tmp_path):
    """At 1400×1000 the Generate button and the first reply column are in view without scrolling; a preset
    moves the sliders (and so λ)."""
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(url)
    page.wait_for_selector("#generate", timeout=TIMEOUT_MS)
    for selector in ("#generate", "#stop", "#reply-base"):
        box = page.locator(selector).bounding_box()
        assert box is not None and box["y"] + min(box["height"], 40) < 1000, (selector, box)
    page.locator("#preset-humor").click()
    page.wait_for_function("() => document.querySelector('#lambda').innerText.includes('humor 1.00')",
                           timeout=TIMEOUT_MS)
    page.locator("#preset-balanced").click()
    page.wait_for_function("() => document.querySelector('#lambda').innerText.includes('humor 0.33')",
                           timeout=TIMEOUT_MS)
    page.screenshot(path=str(tmp_path / "fold.png"))
    page.set_viewport_size({"width": 400, "height": 900})
    page.screenshot(path=str(tmp_path / "narrow.png"), full_page=True)
    shutil.copy(tmp_path / "fold.png", "/tmp/mavis-fold.png")
    shutil.copy(tmp_path / "narrow.png", "/tmp/mavis-narrow.png")
