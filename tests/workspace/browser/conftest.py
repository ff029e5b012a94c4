"""The admin in a real headless Chromium, against the real ASGI server process.

One browser for the whole session (a fresh profile in a temporary directory); each test gets
a new page with no cookies, signs in through the real login form (password and one-time
code), and saves a full-page screenshot of every page it looks at to
``tests/artifacts/screenshots/<name>.png``.

Chromium is Debian's (``apt-get install chromium``), driven by the ``playwright`` package;
Playwright's own browser download is not used. Without Chromium these tests fail, loudly.

Playwright's sync API marks the thread it runs in as running an event loop, and Django then
refuses every ORM call in that thread ("cannot call this from an async context"), for the
rest of the session. So the browser lives in a thread of its own and tests drive it through
``Remote`` proxies; the test's thread keeps its database connection and stays synchronous.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from apps.accounts.models import User
from tests.accounts.factories import PASSWORD
from tests.dispatch.factories import seed_default_triage_policy
from tests.live import AsgiServer

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
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
# A page that takes longer than this is a failure, not something to wait out.
TIMEOUT_MS = 10_000


def chromium_executable() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.fail(
            "The browser tests need Chromium and none was found on PATH: "
            "install Debian's chromium (apt-get install chromium).",
            pytrace=False,
        )
    return found


class BrowserThread:
    """The one thread every Playwright call runs in."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chromium")

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.executor.submit(function, *args, **kwargs).result()


def _unwrap(value: Any) -> Any:
    return value._target if isinstance(value, Remote) else value


class Remote:
    """A Playwright object (page, locator, context manager, method) used from the test's thread."""

    __slots__ = ("_target", "_thread")

    def __init__(self, thread: BrowserThread, target: Any) -> None:
        self._thread, self._target = thread, target

    def _wrap(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self._wrap(item) for item in value]
        if callable(value) or type(value).__module__.startswith("playwright"):
            return Remote(self._thread, value)
        return value

    def __getattr__(self, name: str) -> Any:
        return self._wrap(self._thread.call(getattr, self._target, name))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        args = tuple(_unwrap(arg) for arg in args)
        kwargs = {key: _unwrap(value) for key, value in kwargs.items()}
        return self._wrap(self._thread.call(self._target, *args, **kwargs))

    def __enter__(self) -> Any:
        return self._wrap(self._thread.call(self._target.__enter__))

    def __exit__(self, *exc_info: Any) -> Any:
        return self._thread.call(self._target.__exit__, *exc_info)

    def __repr__(self) -> str:
        return f"Remote({self._thread.call(repr, self._target)})"


@pytest.fixture(autouse=True)
def default_triage_policy(db: None) -> None:
    """These tests commit, and an earlier committing test flushed what the migrations seeded."""
    seed_default_triage_policy()


@pytest.fixture(scope="session")
def browser_context() -> Iterator[Remote]:
    executable = chromium_executable()
    thread = BrowserThread()
    profile = tempfile.TemporaryDirectory(prefix="tandem-chromium-")

    def launch() -> tuple[Any, Any]:
        from playwright.sync_api import sync_playwright

        playwright = sync_playwright().start()
        context = playwright.chromium.launch_persistent_context(
            profile.name,
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(TIMEOUT_MS)
        return playwright, context

    playwright, context = thread.call(launch)
    try:
        yield Remote(thread, context)
    finally:
        thread.call(context.close)
        thread.call(playwright.stop)
        thread.executor.shutdown()
        profile.cleanup()


@dataclass
class AdminBrowser:
    """A page of the session's browser, pointed at the live server."""

    page: Any
    server: AsgiServer
    # Anything the browser saw go wrong: a failed static file, a script error, a CSP refusal.
    problems: list[str] = field(default_factory=list)
    static_served: int = 0

    def url(self, path: str) -> str:
        return f"{self.server.http_url}{path}"

    def open(self, path: str) -> Any:
        response = self.page.goto(self.url(path))
        assert response is not None and response.ok, f"{path}: {response and response.status}"
        return response

    def sign_in(self, user: User) -> None:
        """The real login form, as a person uses it: username and password first, then the
        authenticator the page offers and the code it shows now."""
        device = TOTPDevice.objects.create(user=user, name="authenticator", confirmed=True)
        self.open("/admin/login/?next=/admin/")
        self.screenshot("login")
        self.page.fill("#id_username", user.username)
        self.page.fill("#id_password", PASSWORD)
        with self.page.expect_navigation():
            self.page.click("input[type=submit][value='Log in']")
        # The password was right; the page now lists the user's authenticators.
        self.page.select_option("#id_otp_device", device.persistent_id)
        code = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift).token()
        self.page.fill("#id_otp_token", str(code).zfill(device.digits))
        with self.page.expect_navigation():
            self.page.click("input[type=submit][value='Log in']")
        assert self.page.url == self.url("/admin/"), f"sign-in failed, at {self.page.url}"

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def check_no_problems(self) -> None:
        assert self.static_served > 0, "no static file was served: the admin rendered without its CSS"
        assert self.problems == []


@pytest.fixture
def admin_browser(browser_context: Any, asgi: AsgiServer) -> Iterator[AdminBrowser]:
    browser_context.clear_cookies()
    page = browser_context.new_page()
    browser = AdminBrowser(page, asgi)

    def on_response(response: Any) -> None:
        if "/static/" in response.url and response.ok:
            browser.static_served += 1
        # A page answering 400 is a form showing its errors; a server error, or any file of a
        # page failing, is a problem. (No favicon is served: the browser asks on its own.)
        failed = response.status >= (500 if response.request.resource_type == "document" else 400)
        if failed and not response.url.endswith("/favicon.ico"):
            browser.problems.append(f"{response.status} {response.url}")

    def on_console(message: Any) -> None:
        # A failed resource is reported by on_response, with its address.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            browser.problems.append(f"console: {message.text}")

    page.on("response", on_response)
    page.on("console", on_console)
    page.on("pageerror", lambda error: browser.problems.append(f"script error: {error}"))
    try:
        yield browser
    finally:
        page.close()
