"""Browser helpers for the web console's tests (tests/console.rs), on Playwright's sync API.

Playwright's own browser builds are never downloaded (`playwright install` is not run, and
they are not reachable here): `launch` starts Debian's Chromium, /usr/bin/chromium, which
scripts/test installs. Run with the venv target/console-venv (tests/console/requirements.txt).

    from playwright.sync_api import sync_playwright
    import browser

    with sync_playwright() as p:
        b = browser.launch(p)
        page = b.new_page()
        page.goto(console_url)                 # redirects to the IdP's login form
        browser.sign_in(page, "alice", "pw")   # back at the console once signed in
        browser.screenshot(page, "/tmp/console.png")
        b.close()
"""

import os
from urllib.parse import urlsplit

CHROMIUM = "/usr/bin/chromium"

# Without the background-networking flags Chromium's own connections (component updates,
# sync, ...) are refused on this closed network and get in the way.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch(playwright, **kwargs):
    """A headless Chromium Browser from /usr/bin/chromium; kwargs go to chromium.launch."""
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=CHROMIUM_ARGS + list(kwargs.pop("args", [])),
        **kwargs,
    )


def _origin(url):
    u = urlsplit(url)
    return f"{u.scheme}://{u.netloc}"


def sign_in(page, login, password, timeout_ms=15_000):
    """Fill and submit the login form of tests/oauth2/idp.mjs, which `page` shows.

    Waits until the browser has left the IdP (its origin) and returns the new URL. A wrong
    password leaves the page on the IdP's form (status 401, `p.error`): that raises
    playwright's TimeoutError; to test a refusal, use `submit_login` instead.
    """
    idp = _origin(page.url)
    submit_login(page, login, password)
    page.wait_for_url(lambda url: _origin(url) != idp, timeout=timeout_ms)
    return page.url


def submit_login(page, login, password):
    """Fill and submit the IdP's login form; returns the Response of the form's POST."""
    page.wait_for_selector("form input[name=login]")
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", password)
    with page.expect_response(
        lambda r: r.request.method == "POST" and "/interaction/" in r.url
    ) as posted:
        page.click("button[type=submit]")
    return posted.value


def screenshot(page, path):
    """A full-page PNG screenshot of `page` at `path` (folders created as needed)."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    page.screenshot(path=path, full_page=True)
    return path
