"""Headless Chromium for tests of the HTML reports: does every image load, is the console clean,
and screenshots for a human to look at.

Chromium and chromedriver are Debian's (tests/report/install_browser.sh). Selenium is given that
chromedriver explicitly, so Selenium Manager never tries to download one: tests have no network.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1400, 1000)
MAX_SHOT_HEIGHT = 15000  # Chromium cannot paint much taller than 16384 px in one screenshot
ARGS = (
    "--headless=new",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
    "--allow-file-access-from-files",  # a report's page reads its figures next to it (file://)
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
)

# Broken <img>, and <object>/<embed> whose document did not load, by the src/data they were given.
_BROKEN_JS = """
const imgs = Array.from(document.images);
const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute("src"));
const objs = Array.from(document.querySelectorAll("object[data], embed[src]"));
for (const o of objs) {
    const doc = o.tagName === "OBJECT" ? o.contentDocument : o.getSVGDocument?.();
    if (!doc || !doc.documentElement) broken.push(o.getAttribute("data") ?? o.getAttribute("src"));
}
return {broken_images: broken, n_images: imgs.length + objs.length};
"""


def require_browser() -> None:
    """Fail (not skip) without Chromium: a report test that silently does not run checks nothing.
    CONNTOOL_NO_BROWSER=1 opts out explicitly (skip)."""
    if os.environ.get("CONNTOOL_NO_BROWSER") == "1":
        pytest.skip("CONNTOOL_NO_BROWSER=1: HTML reports not rendered in a browser")
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found: run `bash tests/report/install_browser.sh` "
                    "(as root), or set CONNTOOL_NO_BROWSER=1 to skip the browser tests", pytrace=False)


@contextmanager
def open_browser() -> Iterator[webdriver.Chrome]:
    """A headless Chromium that keeps the page's console log (read by page_problems)."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ARGS:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def _load(driver: webdriver.Chrome, html_path: Path) -> None:
    driver.get(Path(html_path).resolve().as_uri())
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")


def page_problems(driver: webdriver.Chrome, html_path: Path) -> dict:
    """Load a page; return {"broken_images": [src...], "console_errors": [message...], "n_images": n}.

    Console errors are the browser log's SEVERE entries: console.error, uncaught exceptions, and
    also every resource that failed to load (a broken image shows up in both lists)."""
    driver.get_log("browser")  # drop what earlier pages logged
    _load(driver, html_path)
    found = driver.execute_script(_BROKEN_JS)
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return {"broken_images": found["broken_images"], "console_errors": errors, "n_images": found["n_images"]}


def screenshot(driver: webdriver.Chrome, html_path: Path, png_path: Path, full_page: bool = True) -> Path:
    """Save a PNG of the page; full_page grows the window to the page's height (capped)."""
    driver.set_window_size(*WINDOW)
    _load(driver, html_path)
    if full_page:
        height = driver.execute_script(
            "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)"
            " + window.outerHeight - window.innerHeight")
        driver.set_window_size(WINDOW[0], min(int(height), MAX_SHOT_HEIGHT))
    Path(png_path).parent.mkdir(parents=True, exist_ok=True)
    if not driver.save_screenshot(str(png_path)):
        raise RuntimeError(f"Chromium could not save a screenshot of {html_path}")
    return Path(png_path)


def keep_screenshot(driver: webdriver.Chrome, html_path: Path, name: str) -> Path | None:
    """Screenshot into $CONNTOOL_SCREENSHOTS (for a person to look at), when it is set."""
    folder = os.environ.get("CONNTOOL_SCREENSHOTS")
    return screenshot(driver, html_path, Path(folder) / f"{name}.png") if folder else None
