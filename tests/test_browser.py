"""The app in a real browser: Playwright driving Debian's headless Chromium (/usr/bin/chromium, never a
downloaded browser). Loads the page, sees a bad prompt refused, moves a slider, clicks Generate, waits for
every column and the chart; a share link restores the controls and follows them; a click on a point shows its
reply; every column's tokens have hover cards; new seeds and replays; dark mode; nothing fetched from outside;
Stop ends a generation and a sweep; a sweep fills the chart with its progress beside it; the phone layout.
Screenshots are saved under the test's tmp_path and copied to /tmp/mavis-*.png to look at."""

import re
import shutil
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from apputil import METHODS, TIMEOUT_MS, app_engine, browser_page, launch


@pytest.fixture(scope="module")
def served(tiny_dir, tmp_path_factory):
    """(url, engine) of the app serving the tiny stack in this process."""
    engine = app_engine(tiny_dir)
    demo, url = launch(engine, tmp_path_factory.mktemp("study") / "study.db")
    yield url, engine
    demo.close()


@pytest.fixture()
def url(served):
    return served[0]


class Steps(list):
    pause = 0.3  # seconds per decoding step


@pytest.fixture()
def slow(served, monkeypatch):
    """The tiny stack slowed down (a pause per decoding step), so a run lasts long enough to watch and stop; the
    list it gives grows by one per step taken, and setting its ``pause`` to 0 lets later runs go at full speed."""
    engine, steps = served[1], Steps()
    stream, sweep = engine.stream, engine.sweep

    def slow_stream(*args, **kw):
        for replies in stream(*args, **kw):
            steps.append(1)
            time.sleep(steps.pause)
            yield replies

    def slow_sweep(*args, on_step=None, **kw):
        def step(*at):
            steps.append(1)
            time.sleep(steps.pause)
            on_step(*at)
        return sweep(*args, on_step=step, **kw)

    monkeypatch.setattr(engine, "stream", slow_stream)
    monkeypatch.setattr(engine, "sweep", slow_sweep)
    return steps


@pytest.fixture()
def page(browser):
    with browser_page(browser, 1500, 1200) as page:
        yield page


def open_app(page, url: str, query: str = "", ready: str = "#generate") -> None:
    """Open the app at 1400 × 1000 (``query`` such as "?seed=1" appended to its URL) and wait until ``ready``
    is on the page: gradio keeps connections open, so waiting for the network to settle would never end."""
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(url + query)
    page.wait_for_selector(ready, timeout=TIMEOUT_MS)


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
    assert page.locator("#explain .tv-cell[data-method=mavis] .tok .tip").count() > 0  # tokens with hover cards
    page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
    assert (tmp_path / "app.png").stat().st_size > 10_000


@pytest.mark.slow
def test_generate_and_replies_above_the_fold_and_presets(url, page, tmp_path):
    """At 1400×1000 the Generate button and the first reply column are in view without scrolling; a preset
    moves the sliders (and so λ)."""
    open_app(page, url)
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
    shutil.copy(tmp_path / "fold.png", "/tmp/mavis-fold.png")
    # On a phone: prompt and Generate, then the first reply column, then the weights and settings.
    page.set_viewport_size({"width": 400, "height": 900})
    page.wait_for_function("() => document.querySelector('#reply-base').getBoundingClientRect().top < "
                           "document.querySelector('#weight-helpful').getBoundingClientRect().top", timeout=TIMEOUT_MS)
    boxes = {s: page.locator(s).bounding_box() for s in ("#prompt", "#generate", "#reply-base", "#weight-helpful",
                                                          "#methods", "#pareto")}
    assert boxes["#prompt"]["y"] < boxes["#generate"]["y"] < boxes["#reply-base"]["y"] < boxes["#weight-helpful"]["y"]
    assert boxes["#reply-base"]["y"] < boxes["#methods"]["y"] < boxes["#pareto"]["y"]
    assert boxes["#reply-base"]["y"] + 40 < 900  # the first reply starts on the first screen
    assert all(b["x"] >= 0 and b["x"] + b["width"] <= 400 for b in boxes.values()), boxes  # nothing sticks out
    shot(page, tmp_path, "narrow", full_page=True)


def shot(page, tmp_path, name: str, full_page: bool = False) -> None:
    """A screenshot kept with the test's files and copied to /tmp/mavis-<name>.png."""
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=full_page)
    shutil.copy(tmp_path / f"{name}.png", f"/tmp/mavis-{name}.png")


def generate_and_wait(page, methods=METHODS, points: int | None = None) -> None:
    """Press Generate and wait for every ticked column's scores and (``points``) chart points."""
    page.locator("#generate").click()
    for m in methods:
        page.wait_for_function(f"() => document.querySelector('#stats-{m}').innerText.includes('KL')",
                               timeout=TIMEOUT_MS)
    page.wait_for_function(f"() => document.querySelectorAll('#pareto .scatterlayer .point').length >= "
                           f"{points or len(methods)}", timeout=TIMEOUT_MS)


def query(page) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}


@pytest.mark.slow
def test_share_link_restores_the_controls_and_follows_them(url, page, tmp_path):
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto(url + "?prompt=why+not%3F&w_helpful=0&w_harmless=0&w_humor=1&k=7&seed=77&methods=mavis,base"
                    "&len=99999&temp=junk&search=nope")
    page.wait_for_selector("#prompt textarea", timeout=TIMEOUT_MS)
    page.wait_for_function("() => document.querySelector('#prompt textarea').value === 'why not?'",
                           timeout=TIMEOUT_MS)
    page.wait_for_function("() => document.querySelector('#lambda').innerText.includes('humor 1.00')",
                           timeout=TIMEOUT_MS)
    page.wait_for_function("() => !document.querySelector('#methods input[name=mod]').checked", timeout=TIMEOUT_MS)
    assert [m for m in METHODS if page.locator(f"#methods input[name={m}]").is_checked()] == ["base", "mavis"]
    page.get_by_text("Decoding settings").click()
    page.wait_for_selector("#seed input", timeout=TIMEOUT_MS)
    assert page.locator("#seed input").input_value() == "77"
    assert not page.locator("#new-seed input").is_checked()  # a link with a seed replays it
    # The address bar was rewritten once after the restore: clipped (len), junk dropped (temp, search).
    page.wait_for_function("() => new URLSearchParams(location.search).get('len') === '32'", timeout=TIMEOUT_MS)
    q = query(page)
    assert q["k"] == "7" and q["seed"] == "77" and q["temp"] == "1" and q["search"] == "sample"
    assert q["methods"] == "base,mavis" and q["prompt"] == "why not?"
    humor = page.locator("#weight-humor input[type=range]")
    humor.focus()
    humor.press("ArrowLeft")  # a slider moves: the link follows
    page.wait_for_function("() => new URLSearchParams(location.search).get('w_humor') === '0.95'",
                           timeout=TIMEOUT_MS)
    page.locator("#copy-link").click()
    page.wait_for_selector("#copy-link[data-copied]", timeout=TIMEOUT_MS)
    assert page.evaluate("() => navigator.clipboard.readText()") == page.url
    shot(page, tmp_path, "share")
    link = {k: v for k, v in query(page).items() if k != "seed"}
    page.goto(url + "?" + urlencode(link))  # the link, opened in a fresh page
    page.wait_for_selector("#lambda", timeout=TIMEOUT_MS)
    page.wait_for_function("() => document.querySelector('#lambda').innerText.includes('humor 1.00')",
                           timeout=TIMEOUT_MS)
    assert page.locator("#prompt textarea").input_value() == "why not?"


@pytest.mark.slow
def test_click_a_point_shows_its_reply_and_every_column_has_token_cards(url, page, tmp_path):
    page.set_viewport_size({"width": 1400, "height": 1000})
    # a fixed seed (a share link with a seed turns "new seed each time" off): with a random one the base's point
    # sometimes lands on another method's, and the click then rightly shows that method's reply
    page.goto(url + "?seed=1")
    page.wait_for_selector("#generate", timeout=TIMEOUT_MS)
    generate_and_wait(page)
    page.wait_for_function("() => document.querySelector('#details').innerText.includes('mavis')",
                           timeout=TIMEOUT_MS)  # after a generation the details show the MAVIS reply
    base_text = page.locator("#reply-base textarea").input_value()
    page.locator("#pareto").scroll_into_view_if_needed()
    point = page.locator("#pareto .scatterlayer .trace").first.locator(".point").first  # the base column's point
    box = point.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_function("() => /#\\d+ base/.test(document.querySelector('#details').innerText)",
                           timeout=TIMEOUT_MS)
    words = " ".join(base_text.splitlines()[0].split())  # as HTML shows it: runs of blanks (tabs too) as one
    assert words in " ".join(page.locator("#details").inner_text().split())
    assert "base" in page.locator("#sample input").input_value()  # the list follows the click
    shot(page, tmp_path, "clicked")

    card = page.locator("#explain .tv-cell[data-method=mod] .tok").nth(1)
    card.scroll_into_view_if_needed()
    tip = card.locator(".tip")
    assert not tip.is_visible()
    card.hover()
    tip.wait_for(state="visible", timeout=TIMEOUT_MS)
    text = tip.inner_text()
    assert "log π" in text and "log π_ref" in text and "likeliest tokens" in text
    assert "tilt" not in text  # MOD has no objective pushes; MAVIS's cards do
    assert "tilt" in page.locator("#explain .tv-cell[data-method=mavis] .tok .tip").first.inner_html()
    shot(page, tmp_path, "token-card")
    page.set_viewport_size({"width": 400, "height": 900})
    card.scroll_into_view_if_needed()
    card.hover()
    tip.wait_for(state="visible", timeout=TIMEOUT_MS)
    shot(page, tmp_path, "token-card-narrow")


@pytest.mark.slow
def test_new_seed_each_time_then_replay_draws_the_point_once(url, page, tmp_path):
    open_app(page, url)
    methods = ["base", "mod"]
    for m in set(METHODS) - set(methods):
        page.locator(f"#methods input[name={m}]").uncheck()
    seeds = []
    for n in (1, 2):
        generate_and_wait(page, methods, points=n * len(methods))
        stats = page.locator("#stats-mod").inner_text()
        seeds.append(stats.split("seed ")[1].split(" ")[0].strip("*·: "))
    assert seeds[0] != seeds[1]  # a fresh seed each time, shown on the reply
    text = page.locator("#reply-mod textarea").input_value()
    page.get_by_text("Decoding settings").click()
    page.wait_for_selector("#seed input", timeout=TIMEOUT_MS)
    assert page.locator("#seed input").input_value() == seeds[1]  # ... and written into the seed box
    page.locator("#new-seed input").uncheck()
    page.locator("#generate").click()  # a replay of the last reply: the same text, the same points
    page.wait_for_function("() => /×2/.test(document.querySelector('#pareto .scatterlayer').textContent)",
                           timeout=TIMEOUT_MS)
    from playwright.sync_api import expect

    # The chart can show "×2" a moment before the reply box holds its last text (seen under load): wait for it.
    expect(page.locator("#reply-mod textarea")).to_have_value(text, timeout=TIMEOUT_MS)
    assert f"seed {seeds[1]}" in page.locator("#stats-mod").inner_text()
    assert page.locator("#pareto .scatterlayer .point").count() == 2 * len(methods)  # drawn once, with "×2"
    page.locator("#pareto").scroll_into_view_if_needed()
    shot(page, tmp_path, "replay")


@pytest.mark.slow
def test_dark_mode_chart_and_token_view(url, page, tmp_path):
    from mavis_core.plots import dark_template

    open_app(page, url, "?__theme=dark")
    assert page.evaluate("() => document.body.classList.contains('dark')")
    generate_and_wait(page)
    font = dark_template()["layout"]["font"]["color"]
    page.wait_for_function(f"() => document.querySelector('#pareto .js-plotly-plot')._fullLayout.font.color "
                           f"=== '{font}'", timeout=TIMEOUT_MS)
    caption = page.evaluate("() => getComputedStyle(document.querySelector('#explain .tv-caption')).color")
    rgb = [int(v) for v in caption[caption.index("(") + 1:caption.index(")")].split(",")[:3]]
    assert sum(rgb) / 3 > 150, caption  # light text on the dark page
    assert "dark" in query(page).get("__theme", "")  # the share link keeps the theme
    shot(page, tmp_path, "dark", full_page=True)
    page.locator("#z-axis input").click()
    page.get_by_role("option", name="harmless").click()
    page.wait_for_selector("#pareto .gl-container canvas", timeout=TIMEOUT_MS)
    page.wait_for_function(f"() => document.querySelector('#pareto .js-plotly-plot')._fullLayout.font.color "
                           f"=== '{font}'", timeout=TIMEOUT_MS)
    page.locator("#pareto").scroll_into_view_if_needed()
    shot(page, tmp_path, "dark-3d")


@pytest.mark.slow
def test_the_page_makes_no_request_outside_the_server(url, page, tmp_path):
    """So the app loads fully offline (and on Spaces asks nothing of third parties): every request of the page,
    its scripts, fonts and chart included, goes to the app's own host."""
    host = urlsplit(url).netloc
    outside = []
    page.on("request", lambda r: outside.append(r.url) if urlsplit(r.url).netloc not in (host, "") and
            not r.url.startswith(("data:", "blob:")) else None)
    open_app(page, url)
    generate_and_wait(page)
    for tab in ("User study", "Arena", "Generate"):
        tab_button = page.get_by_role("tab", name=tab)
        if tab_button.count():
            tab_button.click()
    page.set_viewport_size({"width": 400, "height": 900})
    page.wait_for_function("() => document.querySelector('#pareto .main-svg').getBoundingClientRect().right <= 400",
                           timeout=TIMEOUT_MS)  # plotly has resized the chart to the narrow page
    shot(page, tmp_path, "narrow-offline", full_page=True)
    assert outside == []


def points(page) -> int:
    return page.evaluate("() => document.querySelectorAll('#pareto .scatterlayer .point').length")


@pytest.mark.slow
def test_stop_ends_a_generation_and_generate_works_again(url, page, slow, tmp_path):
    open_app(page, url, "?len=32&methods=base,mavis")
    page.wait_for_function("() => !document.querySelector('#methods input[name=mod]').checked", timeout=TIMEOUT_MS)
    page.locator("#generate").click()
    page.wait_for_function("() => document.querySelector('#reply-mavis textarea').value.length > 0",
                           timeout=TIMEOUT_MS)
    page.locator("#stop").click()
    page.wait_for_function("() => !document.querySelector('#explain').innerText.includes('Generating')",
                           timeout=TIMEOUT_MS)  # Stop shows each stopped column's tokens
    page.wait_for_timeout(1000)  # the step under way ends
    text, steps = page.locator("#reply-mavis textarea").input_value(), len(slow)
    page.wait_for_timeout(2000)  # a running generation would add a token every 0.3 s meanwhile
    assert page.locator("#reply-mavis textarea").input_value() == text and len(slow) == steps
    assert "KL" not in page.locator("#stats-mavis").inner_text()  # it never finished
    for m in ("base", "mavis"):  # each column says it stopped, after how many tokens, and keeps its text
        assert re.search(r"stopped after \d+ tokens?", page.locator(f"#stats-{m}").inner_text())
    assert "Stopped" in page.locator("#explain").inner_text()
    assert points(page) == 0
    shot(page, tmp_path, "stopped")
    slow.pause = 0
    generate_and_wait(page, ["base", "mavis"])  # the button works again, and this one runs to its end
    assert len(page.locator("#reply-mavis textarea").input_value()) >= len(text)


@pytest.mark.slow
def test_a_sweep_fills_the_chart_with_progress_beside_it_and_stops(url, page, slow, tmp_path):
    open_app(page, url, "?len=3&methods=base,mavis", ready="#sweep")
    page.wait_for_function("() => !document.querySelector('#methods input[name=mod]').checked", timeout=TIMEOUT_MS)
    for selector, value in (("#sweep-prompts", "2"), ("#sweep-seeds", "2")):
        box = page.locator(f"{selector} input[type=number]")
        box.fill(value)
        box.press("Enter")
    page.locator("#sweep").click()
    status = page.locator("#sweep-status")
    # Round 1 of 4 lands on the chart while the later rounds still run; the progress is right above it.
    page.wait_for_function("() => document.querySelector('#sweep-status').innerText.includes('Sweeping') && "
                           "document.querySelectorAll('#pareto .scatterlayer .point').length > 0", timeout=TIMEOUT_MS)
    assert "round" in status.inner_text() and "Varies" in status.inner_text()
    chart, above = page.locator("#pareto").bounding_box(), status.bounding_box()
    assert above["y"] + above["height"] <= chart["y"] + 2 and abs(above["x"] - chart["x"]) < 20  # right on top
    page.evaluate("() => document.querySelector('#sweep-status').scrollIntoView()")  # the status, the chart below
    shot(page, tmp_path, "sweep-running")
    page.wait_for_function("() => document.querySelector('#sweep-status').innerText.includes('Swept')",
                           timeout=TIMEOUT_MS)
    assert "2 prompts × 2 seeds" in status.inner_text()
    assert page.locator("#pareto .errorbars path").count() > 0  # each point at its mean, with error bars
    assert points(page) >= 12  # 11 λ points of MAVIS and the base's one (the front draws some twice)
    page.evaluate("() => document.querySelector('#sweep-status').scrollIntoView()")
    shot(page, tmp_path, "sweep-done")

    page.locator("#clear").click()
    page.wait_for_function("() => document.querySelectorAll('#pareto .scatterlayer .point').length === 0",
                           timeout=TIMEOUT_MS)
    page.locator("#sweep").click()
    page.wait_for_function("() => document.querySelector('#sweep-status').innerText.includes('Sweeping')",
                           timeout=TIMEOUT_MS)
    page.locator("#stop").click()
    page.wait_for_function("() => document.querySelector('#sweep-status').innerText.includes('Stopped')",
                           timeout=TIMEOUT_MS)
    page.wait_for_timeout(1000)  # the step under way ends
    steps = len(slow)
    page.wait_for_timeout(3000)  # a sweep still running would take ten more steps meanwhile
    assert len(slow) == steps and "Swept" not in status.inner_text()
    page.locator("#generate").click()  # the model slot is free again
    page.wait_for_function("() => document.querySelector('#stats-mavis').innerText.includes('KL')",
                           timeout=TIMEOUT_MS)
    shot(page, tmp_path, "sweep-stopped")


@pytest.mark.slow
def test_same_axes_are_refused_beside_the_chart_and_errors_do_not_pile_up(url, page, tmp_path):
    open_app(page, url)
    prompt, notice = page.locator("#prompt textarea"), page.locator("#notice")
    for text, words in (("   ", "prompt is empty"), ("a\x07b", "control characters"), ("  ", "prompt is empty")):
        prompt.fill(text)  # three refusals in a row: each replaces the line under the button; no toasts
        page.locator("#generate").click()
        page.wait_for_function(f"() => document.querySelector('#notice').innerText.includes('{words}')",
                               timeout=TIMEOUT_MS)
    assert page.locator("[data-testid=toast-body]").count() == 0 and notice.inner_text().count("⚠") == 1
    page.locator("#y-axis input").click()
    page.get_by_role("option", name="helpful").click()
    page.wait_for_function("() => document.querySelector('#axes-notice').innerText.includes('two different')",
                           timeout=TIMEOUT_MS)
    assert "humor reward" in page.locator("#pareto").inner_text()  # the chart keeps its last axes
    assert "y ('y axis')" in page.locator("#axes-notice").inner_text()
    shot(page, tmp_path, "notices")
    prompt.fill("hello there")
    page.locator("#generate").click()  # Generate refuses the same axes too, and says so under the button
    page.wait_for_function("() => document.querySelector('#notice').innerText.includes('two different')",
                           timeout=TIMEOUT_MS)
    page.locator("#y-axis input").click()
    page.get_by_role("option", name="humor").click()
    page.wait_for_function("() => document.querySelector('#axes-notice').innerText.trim() === ''", timeout=TIMEOUT_MS)


@pytest.mark.slow
def test_replay_under_the_columns_gives_the_same_replies_again(url, page, tmp_path):
    """One click replays the seed shown: it goes into the seed box, "new seed each time" is unticked, and the
    replies are the same as before."""
    open_app(page, url, "?len=8&methods=base,mavis")
    generate_and_wait(page, ["base", "mavis"])
    texts = [page.locator(f"#reply-{m} textarea").input_value() for m in ("base", "mavis")]
    seed = re.search(r"seed (\d+)", page.locator("#stats-mavis").inner_text()).group(1)  # the seed box is folded away
    assert f"Replay seed {seed}" in page.locator("#replay").inner_text()
    page.locator("#replay").click()
    page.wait_for_function("() => document.querySelectorAll('#pareto .scatterlayer .point').length >= 4 || "
                           "document.querySelector('#pareto').innerText.includes('×2')", timeout=TIMEOUT_MS)
    page.wait_for_function("() => document.querySelector('#stats-mavis').innerText.includes('KL')",
                           timeout=TIMEOUT_MS)
    assert query(page)["seed"] == seed and f"seed {seed}" in page.locator("#stats-mavis").inner_text()
    assert [page.locator(f"#reply-{m} textarea").input_value() for m in ("base", "mavis")] == texts
    shot(page, tmp_path, "replayed")
