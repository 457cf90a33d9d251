"""Selenium steps the browser tests share: log in and out, wait for what a page shows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.web.conftest import password

WAIT = 20


def wait_until(driver: Any, predicate: Callable[[Any], Any], timeout: float = WAIT,
               message: str = "") -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(predicate, message)


def text_of(driver: Any, css: str) -> str:
    """The element's text; "" while it is absent or the page is being replaced."""
    try:
        found = driver.find_elements(By.CSS_SELECTOR, css)
        return str(found[0].text) if found else ""
    except WebDriverException:
        # Stale, or Chromium's own "node does not belong to the document": the page
        # replaced the element between finding it and reading it; the caller polls again.
        return ""


def log_in(driver: Any, base: str, user: str, secret: str | None = None) -> None:
    driver.get(f"{base}/ui/login")
    driver.find_element(By.ID, "username").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(secret or password(user))
    driver.find_element(By.ID, "login-button").click()
    wait_until(driver, lambda d: "/ui/login" not in d.current_url
               or d.find_elements(By.ID, "login-error"), message=f"logging in as {user}")


def log_out(driver: Any) -> None:
    driver.find_element(By.ID, "logout").click()
    wait_until(driver, lambda d: d.current_url.split("?")[0].endswith("/ui/login"),
               message="logging out")


def fetch(driver: Any, method: str, path: str, body: Any = None) -> dict[str, Any]:
    """A request made by the page's own script: the session cookie and its CSRF token."""
    result: dict[str, Any] = driver.execute_async_script("""
        const [method, path, body, done] = arguments;
        fetch(path, {method, credentials: "same-origin",
                     headers: {"Content-Type": "application/json",
                               "X-CSRF-Token": csrfToken()},
                     body: body === null ? undefined : JSON.stringify(body)})
          .then(async (r) => done({status: r.status, body: await r.json().catch(() => null)}))
          .catch((e) => done({status: 0, body: String(e)}));
    """, method, path, body)
    return result
