"""In a real headless Chromium, against the real daemon and FIX simulators: two PMs approve
a block a four-eyes policy holds, from the blotter to the J at the broker; a rejection
without a reason is refused; a viewer sees no vote button and a vote it posts is refused."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from gateway.fix.sim.common import wait_for
from tests.support.harness import ROOT
from tests.web.browsing import fetch, log_in, log_out, text_of, wait_until
from tests.web.conftest import REPORT, Desk

pytestmark = [pytest.mark.fix, pytest.mark.browser]

DOCS_SCREENSHOT = ROOT / "docs" / "approval-page.png"


def screenshot(driver: Any, path: Path) -> Path:
    """The whole allocation page (the window is stretched to its height first)."""
    height = driver.execute_script(
        "window.scrollTo(0, 0); return document.documentElement.scrollHeight")
    driver.set_window_size(1440, min(max(int(height), 1000), 2400))
    driver.save_screenshot(str(path))
    driver.set_window_size(1440, 1000)
    REPORT["screenshots"].append(str(path))
    return path


def vote(driver: Any, action: str, reason: str) -> None:
    box = driver.find_element(By.ID, f"{action}-reason")
    box.clear()
    box.send_keys(reason)
    driver.find_element(By.ID, action).click()


def test_two_pms_approve_a_held_block_in_the_browser_and_its_j_goes_out(
        page: Any, desk: Desk, tmp_path: Path) -> None:
    driver = page
    log_in(driver, desk.url, "alice")
    assert driver.current_url.endswith("/ui/")
    assert text_of(driver, "#whoami") == "alice"
    # The blotter refreshes itself: the block sent now appears without a page load.
    driver.execute_script("window.loadedOnce = 'still here'")
    desk.send("WEB-E2E", qty=500_000)  # the demo's block: some accounts are capped
    link = wait_until(driver, lambda d: d.find_elements(
        By.CSS_SELECTOR, 'tr[data-cl-ord-id="WEB-E2E"] a.alloc-link'), 30,
        message="the blotter shows the held block")[0]
    assert driver.execute_script("return window.loadedOnce") == "still here"
    row = driver.find_element(By.CSS_SELECTOR, 'tr[data-cl-ord-id="WEB-E2E"]')
    assert "500,000 / 500,000" in row.text and "pending_approval" in row.text
    alloc_id = link.text
    wait_until(driver, lambda d: d.find_elements(
        By.CSS_SELECTOR, f'#pending tr[data-alloc="{alloc_id}"]'),
        message="the pending approvals list the block")

    link.click()
    wait_until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#accounts[data-ready]"))
    assert text_of(driver, "h1 code") == alloc_id
    assert text_of(driver, "#approval-state") == "approval pending"
    assert "FOUR-EYES-ALL" in text_of(driver, "#policies")
    assert "decision.manual = false" in text_of(driver, "#policies")
    assert text_of(driver, "#waiting-for") == "Waiting for: FOUR-EYES-ALL: 2 more pm"
    assert text_of(driver, "#symbol") == "AAPL"
    assert text_of(driver, "#method").startswith("pro_rata")
    # Every account of the book, with the rule behind each exclusion and cap.
    assert driver.find_element(By.ID, "accounts").get_attribute("data-shown") == "200"
    excluded = driver.find_element(By.CSS_SELECTOR, 'tr[data-account="SMA0034"]').text
    assert "excluded" in excluded and "SMA0034-NO-TECH v1" in excluded
    capped = driver.find_element(By.CSS_SELECTOR, 'tr[data-account="SMA0042"]').text
    assert "capped" in capped and "SMA0042-ISSUER-3 v1" in capped
    # An account's explanation comes from GET /allocations/{id}/explain.
    driver.find_element(By.CSS_SELECTOR, 'a[data-explain="SMA0042"]').click()
    wait_until(driver, lambda d: "SMA0042-ISSUER-3" in text_of(d, "#explain"),
               message="the explanation of SMA0042")

    vote(driver, "approve", "checked the split")
    wait_until(driver, lambda d: "1 more pm" in text_of(d, "#flash"),
               message="alice's approval recorded")
    assert text_of(driver, "#approval-state") == "approval pending"
    assert "alice" in text_of(driver, "#votes") and "checked the split" in text_of(
        driver, "#votes")
    assert text_of(driver, "#my-vote").startswith("You voted approve")  # not twice
    assert not driver.find_elements(By.ID, "approve")
    assert desk.broker.allocations == [] or all(
        j.alloc_id != alloc_id for j in desk.broker.allocations)

    log_out(driver)
    log_in(driver, desk.url, "bob")
    driver.find_element(By.CSS_SELECTOR, f'#pending a[href="/ui/allocations/{alloc_id}"]'
                        ).click()
    wait_until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#accounts[data-ready]"))
    assert text_of(driver, "#whoami") == "bob"
    assert text_of(driver, "#waiting-for") == "Waiting for: FOUR-EYES-ALL: 1 more pm"
    # What the second approver sees: the block held, alice's vote, the forms.
    shot = screenshot(driver, tmp_path / "approval-page-held.png")
    if os.environ.get("FIXALLOC_UPDATE_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.write_bytes(shot.read_bytes())
        DOCS_SCREENSHOT.chmod(0o644)
    vote(driver, "approve", "")
    wait_until(driver, lambda d: "now approved" in text_of(d, "#flash"),
               message="bob's approval decides")
    assert text_of(driver, "#approval-state") == "approval approved"
    assert wait_for(lambda: any(j.alloc_id == alloc_id for j in desk.broker.allocations), 15)
    j = next(j for j in desk.broker.allocations if j.alloc_id == alloc_id)
    stored = {ln["account_id"]: ln["qty"] for ln in desk.db.load_allocation_lines(alloc_id)}
    assert {str(ln["account"]): str(ln["qty"]) for ln in j.lines}.keys() == stored.keys()
    # The page follows the allocation to the broker's answer without a reload.
    wait_until(driver, lambda d: text_of(d, "#alloc-status") == "accepted",
               message="the page shows the broker's acceptance")
    assert not driver.find_elements(By.ID, "actions")
    path = screenshot(driver, tmp_path / "approval-page-approved.png")
    print(f"screenshot of the approved allocation page: {path}")


def test_a_rejection_without_a_reason_is_refused_in_the_page(page: Any, desk: Desk) -> None:
    driver = page
    alloc_id = desk.held("WEB-REJECT")
    log_in(driver, desk.url, "alice")
    driver.get(f"{desk.url}/ui/allocations/{alloc_id}")
    wait_until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#accounts[data-ready]"))
    vote(driver, "reject", "   ")
    wait_until(driver, lambda d: "needs a reason" in text_of(d, "#action-message"))
    assert "error" in driver.find_element(By.ID, "action-message").get_attribute("class")
    # Nothing was sent; and had the page sent it, the gateway refuses it as well.
    answer = fetch(driver, "POST", f"/approvals/{alloc_id}/reject", {"reason": ""})
    assert answer["status"] == 422, answer
    assert desk.api("alice", f"/approvals/{alloc_id}")[1]["votes"] == []
    driver.refresh()
    wait_until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#accounts[data-ready]"))
    assert text_of(driver, "#approval-state") == "approval pending"

    vote(driver, "reject", "SMA0002 is under review")
    wait_until(driver, lambda d: "now rejected" in text_of(d, "#flash"))
    assert text_of(driver, "#approval-state") == "approval rejected"
    assert text_of(driver, "#alloc-status") == "approval_rejected"
    assert "SMA0002 is under review" in text_of(driver, "#held")
    assert all(j.alloc_id != alloc_id for j in desk.broker.allocations)
    # The blotter lists the rejection among the open exceptions.
    driver.get(f"{desk.url}/ui/")
    assert alloc_id in text_of(driver, "#exceptions")


def test_a_viewer_sees_no_vote_buttons_and_a_vote_it_posts_is_refused(
        page: Any, desk: Desk) -> None:
    driver = page
    alloc_id = desk.held("WEB-VIEWER")
    log_in(driver, desk.url, "vera", "not-her-password")
    assert text_of(driver, "#login-error") == "wrong username or password"
    assert driver.find_element(By.ID, "username").get_attribute("value") == "vera"
    log_in(driver, desk.url, "vera")
    driver.get(f"{desk.url}/ui/allocations/{alloc_id}")
    wait_until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#accounts[data-ready]"))
    assert text_of(driver, "#approval-state") == "approval pending"
    for absent in ("actions", "approve", "reject", "approve-form", "reject-form"):
        assert not driver.find_elements(By.ID, absent), absent
    answer = fetch(driver, "POST", f"/approvals/{alloc_id}/approve", {"reason": "me too"})
    assert answer["status"] == 403
    assert "role viewer may not do action approve" in answer["body"]["detail"]
    assert desk.api("alice", f"/approvals/{alloc_id}")[1]["votes"] == []
    # And an admin-only page is a 403 page, not a redirect.
    driver.get(f"{desk.url}/ui/users")
    assert text_of(driver, "#error-status").startswith("403")
    assert "may not do action manage_users" in text_of(driver, "#error-message")
