"""A participant link in a real browser (Debian's headless Chromium): instructions → trials → completion code, at
1400 × 1000 and at 400 px; a bad link shows its message in place; without ``?study=`` the page is the explorer.
Screenshots are saved under the test's tmp_path and copied to /tmp/mavis-participant-*.png to look at."""

import shutil

import pytest
from apputil import TIMEOUT_MS, TOKEN, app_engine, browser_page, free_port
from test_app_participant import make_studies

from mavis_core.study import SLOTS

TOTAL = 5  # the test study's 4 trials and its attention check


@pytest.fixture(scope="module")
def url(tiny_dir, tmp_path_factory):
    """The app on the tiny stack with the test studies (pools of made-up replies); it cannot decode."""
    import app

    folder = tmp_path_factory.mktemp("browser-study")
    make_studies(folder / "studies", folder / "study.db")
    engine = app_engine(tiny_dir)
    demo = app.build_demo(engine, folder / "study.db", admin_token=TOKEN, studies_dir=folder / "studies")
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def shot(page, tmp_path, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    shutil.copy(tmp_path / f"{name}.png", f"/tmp/mavis-participant-{name}.png")


def answer_trial(page) -> None:
    """Every visible rating 4, favourite A, vote "A is better", as the trial asks; then Submit."""
    for slot in SLOTS:
        for j in range(4):
            radio = page.locator(f"#participant-rate-{slot}-{j}")
            if radio.count() and radio.is_visible():
                radio.locator("label", has_text="4").click()
    if page.locator("#participant-favourite").is_visible():
        page.locator("#participant-favourite label", has_text="A").first.click()
    if page.locator("#participant-vote").is_visible():
        page.locator("#participant-vote label", has_text="A is better").click()
    page.locator("#participant-submit").click()


@pytest.mark.slow
@pytest.mark.parametrize("width", [1400, 400])
def test_a_link_walks_instructions_trials_and_completion(url, browser, tmp_path, width):
    with browser_page(browser, width, 1000) as page:
        page.goto(f"{url}?study=t&PROLIFIC_PID=browser-{width}")
        page.wait_for_selector("#participant-start", timeout=TIMEOUT_MS)
        assert "then answer" in page.locator("#participant-instructions").inner_text()
        assert not page.locator("#generate").is_visible()  # the study view only
        page.wait_for_timeout(1000)  # the explorer's share link would rewrite the address bar by now
        assert "methods" not in page.url and "w_" not in page.url, page.url  # no method names, even up there
        assert page.title() == "Study"
        shot(page, tmp_path, f"intro-{width}")
        page.locator("#participant-start").click()
        for i in range(1, TOTAL + 1):
            page.wait_for_function(f"() => (document.querySelector('#participant-progress') || {{}}).innerText"
                                   f"?.includes('Trial {i} of {TOTAL}')", timeout=TIMEOUT_MS)
            if i in (1, 3):
                shot(page, tmp_path, f"trial{i}-{width}")
            if i == 1:  # a submit with nothing answered says what is missing, in place
                page.locator("#participant-submit").click()
                page.wait_for_function("() => document.querySelector('#participant-notice').innerText"
                                       ".includes('still missing')", timeout=TIMEOUT_MS)
                boxes = [page.locator(f"#participant-reply-{s}").bounding_box() for s in "AB"]
                assert all(b["x"] >= 0 and b["x"] + b["width"] <= width for b in boxes), boxes
                shot(page, tmp_path, f"missing-{width}")
            answer_trial(page)
        page.wait_for_selector("#completion-code", timeout=TIMEOUT_MS)
        assert page.locator("#completion-code").inner_text() == "DONE-42"
        assert page.locator("#participant-completion a").get_attribute("href").startswith("https://example.org/")
        assert f"browser-{width}" not in page.locator("#participant").inner_text()
        shot(page, tmp_path, f"done-{width}")
        page.reload()  # a return: the code again at once, nothing to press, never new trials
        page.wait_for_selector("#completion-code", timeout=TIMEOUT_MS)
        assert page.locator("#completion-code").inner_text() == "DONE-42"
        assert not page.locator("#participant-start").is_visible()


@pytest.mark.slow
def test_a_bad_link_says_so_and_no_study_is_the_explorer(url, browser, tmp_path):
    with browser_page(browser) as page:
        page.goto(f"{url}?study=t&PROLIFIC_PID=not%20an%20id")
        page.wait_for_function("() => document.querySelector('#participant-instructions')?.innerText"
                               ".includes('does not work')", timeout=TIMEOUT_MS)
        assert "participant id" in page.locator("#participant-instructions").inner_text()
        assert not page.locator("#participant-start").is_visible() and not page.locator("#generate").is_visible()
        shot(page, tmp_path, "bad-link")
        page.goto(url)
        page.wait_for_selector("#generate", timeout=TIMEOUT_MS)  # the explorer, its Generate tab first
        assert not page.locator("#participant").is_visible() and not page.locator("#researcher").is_visible()


@pytest.mark.slow
def test_the_researcher_view_shows_progress_behind_the_token(url, browser, tmp_path):
    with browser_page(browser) as page:
        page.goto(f"{url}?researcher=t")
        page.wait_for_selector("#researcher-show", timeout=TIMEOUT_MS)
        assert not page.locator("#generate").is_visible() and not page.locator("#participant").is_visible()
        assert page.locator("#researcher-study textarea").input_value() == "t"
        page.locator("#researcher-token input").fill("wrong")
        page.locator("#researcher-show").click()
        page.wait_for_function("() => document.querySelector('#researcher-notice').innerText.includes('Wrong admin')",
                               timeout=TIMEOUT_MS)
        page.locator("#researcher-token input").fill(TOKEN)
        page.locator("#researcher-show").click()
        page.wait_for_function("() => document.querySelector('#researcher-summary').innerText.includes('participants')",
                               timeout=TIMEOUT_MS)
        assert page.locator("#researcher-notice").inner_text().strip() == ""
        shot(page, tmp_path, "researcher")
