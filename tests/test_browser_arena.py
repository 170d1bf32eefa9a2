"""The arena and study tabs in a real browser: Playwright driving Debian's headless Chromium (/usr/bin/chromium,
never a downloaded browser). A rater votes on a pair and the form clears; the admin sees the leaderboard and
downloads the preference JSONL; the ratings form clears after Submit. Screenshots at 1400×1000 and 400 px."""

import json
from pathlib import Path

import pytest
from apputil import METHODS, TIMEOUT_MS, TOKEN, N, app_engine, browser_page, launch

from mavis_core.study import RATING_RANGE, SLOTS, printable


@pytest.fixture(scope="module")
def url(tiny_dir, tmp_path_factory):
    demo, url = launch(app_engine(tiny_dir), tmp_path_factory.mktemp("study") / "study.db")
    yield url
    demo.close()


@pytest.fixture()
def page(browser):
    with browser_page(browser, 1400, 1000) as page:
        yield page


def wait_text(page, selector: str, text: str) -> None:
    page.wait_for_function(f"() => (document.querySelector({selector!r})?.innerText || '').includes({text!r})",
                           timeout=TIMEOUT_MS)


def checked(page, selector: str) -> int:
    return page.locator(f"{selector} input[type=radio]:checked").count()


@pytest.mark.slow
def test_arena_vote_then_the_admins_leaderboard_and_jsonl_export(url, page, tmp_path):
    page.goto(url)
    page.get_by_role("tab", name="Arena").click()
    page.locator("#arena-prompt textarea").fill("tell me a joke")
    page.locator("#arena-new").click()
    wait_text(page, "#arena-header", "Weights")
    for slot in ("A", "B"):
        page.wait_for_function(f"() => document.querySelector('#arena-{slot} textarea').value.length > 0",
                               timeout=TIMEOUT_MS)
    header = page.locator("#arena-header").inner_text()
    assert "tell me a joke" in header and "how much each objective counts" in header
    assert not any(m in header.lower() for m in METHODS)
    texts = [page.locator(f"#arena-{slot} textarea").input_value() for slot in ("A", "B")]
    page.screenshot(path=str(tmp_path / "arena-pair.png"))

    page.locator("#arena-vote label", has_text="A is better").click()
    page.locator("#arena-submit").click()
    wait_text(page, "#arena-status", "vote saved")
    wait_text(page, "#arena-header", "Press New pair")  # the form clears: no replies, no vote left
    assert checked(page, "#arena-vote") == 0
    assert [page.locator(f"#arena-{slot} textarea").input_value() for slot in ("A", "B")] == ["", ""]

    page.locator("#arena-admin").get_by_text("Leaderboard (admin)").click()
    page.locator("#arena-token input").fill(TOKEN)
    page.locator("#arena-show").click()
    wait_text(page, "#arena-board", "strength")
    page.wait_for_function("() => /base|mavis|mod|rsoup/.test(document.querySelector('#arena-board').innerText)",
                           timeout=TIMEOUT_MS)
    board = page.locator("#arena-board").inner_text()
    assert sum(m in board for m in METHODS) == 2  # the two methods of the one vote

    page.locator("#arena-export-jsonl").click()
    link = page.locator("#arena-jsonl a[download]").first
    link.wait_for(timeout=TIMEOUT_MS)
    with page.expect_download() as download:
        link.click()
    pairs = [json.loads(line) for line in Path(download.value.path()).read_text(encoding="utf-8").splitlines()]
    chosen, rejected = (printable(t) for t in texts)  # the export strips control characters
    for pair in pairs:  # the λ it was judged under, as fields and as the system prompt
        assert pair.pop("system").startswith("Weigh your reply")
        assert sum(pair.pop("weights").values()) == pytest.approx(1.0)
    assert pairs == ([{"prompt": "tell me a joke", "chosen": chosen, "rejected": rejected}] if chosen != rejected
                     else [])
    page.locator("#arena-board").scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / "arena-leaderboard.png"))
    page.set_viewport_size({"width": 400, "height": 900})
    page.screenshot(path=str(tmp_path / "arena-narrow.png"), full_page=True)
    assert (tmp_path / "arena-leaderboard.png").stat().st_size > 10_000


@pytest.mark.slow
def test_study_ratings_form_clears_after_submit(url, page, tmp_path):
    page.goto(url)
    page.get_by_role("tab", name="User study").click()
    page.locator("#study-new").click()
    wait_text(page, "#study-header", "Weights")
    page.wait_for_function("() => document.querySelector('#study-reply-A textarea').value.length > 0",
                           timeout=TIMEOUT_MS)
    assert "how much each objective counts" in page.locator("#study-header").inner_text()
    page.screenshot(path=str(tmp_path / "study-trial.png"))
    for slot in SLOTS[:N]:
        for objective in ("helpful", "harmless", "humor"):
            if (slot, objective) != ("B", "harmless"):
                page.locator(f"#rate-{slot}-{objective} label", has_text="4").click()
    page.locator("#favourite label", has_text="C").click()
    page.locator("#study-submit").click()  # one rating missing: said under the button, the form stays
    wait_text(page, "#study-notice", "Reply B has no harmless rating yet")
    assert page.locator("#study-reply-A textarea").input_value() != "" and checked(page, "#favourite") == 1
    assert page.locator(".toast-body").count() == 0  # in place, not in a toast that vanishes
    page.screenshot(path=str(tmp_path / "study-incomplete.png"))
    page.locator("#rate-B-harmless label", has_text="4").click()
    page.locator("#study-submit").click()
    wait_text(page, "#study-status", "saved")
    assert page.locator("#study-notice").inner_text().strip() == ""
    wait_text(page, "#study-header", "Press New trial")
    assert sum(checked(page, f"#rate-{s}-{k}") for s in SLOTS[:N] for k in ("helpful", "harmless", "humor")) == 0
    assert checked(page, "#favourite") == 0 and page.locator("#study-reply-A textarea").input_value() == ""
    page.screenshot(path=str(tmp_path / "study-cleared.png"))
    assert RATING_RANGE == (1, 5)


@pytest.mark.slow
def test_a_wrong_token_keeps_the_table_and_a_used_export_link_is_gone(url, page, tmp_path):
    """The admin's mistakes show beside the buttons, never over what is shown; an export link goes once used."""
    page.goto(url)
    page.get_by_role("tab", name="Arena").click()
    page.locator("#arena-admin").get_by_text("Leaderboard (admin)").click()
    page.locator("#arena-token input").fill(TOKEN)
    page.locator("#arena-show").click()
    wait_text(page, "#arena-board", "strength")
    board = page.locator("#arena-board").inner_text()
    page.locator("#arena-token input").fill("wrong")
    page.locator("#arena-show").click()
    wait_text(page, "#arena-admin-notice", "Wrong admin token")
    assert page.locator("#arena-board").inner_text() == board  # the table already shown stays
    assert page.locator(".toast-body").count() == 0
    page.screenshot(path=str(tmp_path / "arena-wrong-token.png"))
    page.locator("#arena-token input").fill(TOKEN)
    page.locator("#arena-export-csv").click()
    link = page.locator("#arena-csv a[download]").first
    link.wait_for(timeout=TIMEOUT_MS)
    assert page.locator("#arena-admin-notice").inner_text().strip() == ""  # the right token clears the message
    with page.expect_download() as download:
        link.click()
    assert Path(download.value.path()).read_text().startswith("trial_id,")
    wait_text(page, "#arena-admin-notice", "that link is spent")
    page.wait_for_function("() => !document.querySelector('#arena-csv a[download]')", timeout=TIMEOUT_MS)
    page.screenshot(path=str(tmp_path / "arena-export-spent.png"))
