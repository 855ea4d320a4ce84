"""The Django example in Chromium: a user's notification reaches that user's pages only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from example_server import run_example
from playwright.sync_api import expect

DONE = "Your import is done: 42 contacts"


def log_in(page: Any, base: str, username: str) -> None:
    """Log in through the example's login form and wait for the live page."""
    page.goto(f"{base}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", f"{username}-knocks")
    with page.expect_navigation(url=f"{base}/"):
        page.click("main form button[type=submit]")
    expect(page.locator("#status")).to_have_text("live")


def test_user_notice_reaches_only_that_user(new_page: Any, screenshot: Any, tmp_path: Path) -> None:
    """Ada's import notice shows on her page; Grace's page gets the next knock, not the notice."""
    env = {"KNOCKS_DATA_DIR": str(tmp_path), "KNOCKS_IMPORT_SECONDS": "0.2"}
    with run_example("django_app", **env) as server:
        ada, grace = new_page(), new_page()  # separate contexts: separate sessions
        log_in(ada, server.url, "ada")
        log_in(grace, server.url, "grace")

        ada.click("#import-form button")
        expect(ada.locator("#notices li", has_text=DONE)).to_have_count(1)

        # A public knock after the notice: once Grace's page shows it, the
        # notice would have arrived before it on the same stream.
        ada.fill("input[name=name]", "Ada")
        ada.click("#knock-form button")
        expect(grace.locator("#knocks li", has_text="Ada knocked")).to_have_count(1)
        expect(grace.locator("#notices li", has_text="Your import is done")).to_have_count(0)
        screenshot(ada, "django-notice")


def test_job_page_shows_progress_then_stops(new_page: Any, screenshot: Any, tmp_path: Path) -> None:
    """The job page fills its progress bar from the held view, ends with the job, stays closed."""
    env = {"KNOCKS_DATA_DIR": str(tmp_path), "KNOCKS_IMPORT_SECONDS": "3"}
    with run_example("django_app", **env) as server:
        ada = new_page()
        log_in(ada, server.url, "ada")
        stream_requests: list[str] = []
        ada.on(
            "request",
            lambda request: (
                stream_requests.append(request.url) if request.url.endswith("/events") else None
            ),
        )
        ada.click("#import-form button")
        link = ada.locator("#notices a", has_text="Import #")
        with ada.expect_navigation(url=f"{server.url}/jobs/**"):
            link.click()
        expect(ada.locator("#job-status")).to_have_text("Done: 42 contacts", timeout=20_000)
        expect(ada.locator("body")).to_have_attribute("data-stream", "closed")
        live_events = int(ada.locator("#progress").get_attribute("data-events") or 0)
        assert live_events >= 1
        assert ada.locator("#progress").evaluate("bar => bar.value") == 42
        # One stream for the whole job (no reconnection), and the page closed
        # it on "done" (data-stream), so none follows the end of the response.
        assert len(stream_requests) == 1, stream_requests
        screenshot(ada, "django-job")
