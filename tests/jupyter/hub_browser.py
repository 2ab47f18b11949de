"""Logging in to a real JupyterHub in a browser and landing in the user's Lab with the
conda-store panel open: the first steps of every ui-tests/test_lab_hub*.py test."""

from __future__ import annotations

PANEL_TAB = '.jp-SideBar .lm-TabBar-tab[data-id="conda-store-panel"]'


def hub_login(browser, hub, user: str, viewport: tuple[int, int] = (1200, 800)):
    """A fresh browser context that logs in on the hub's own form and lands in ``user``'s Lab,
    panel open; returns (context, page, page errors seen so far and later)."""
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{hub.public_url}/hub/login")
    page.locator("#username_input").fill(user)
    page.locator("#password_input").fill("any")
    page.locator("#login_submit").click()
    page.wait_for_url(f"**/user/{user}/lab**", timeout=120_000)
    tab = page.locator(PANEL_TAB)
    tab.wait_for(timeout=60_000)
    # Clicking a tab that is already selected collapses the sidebar (Lab may restore it open).
    if tab.get_attribute("aria-selected") != "true":
        tab.click()
    return context, page, errors
