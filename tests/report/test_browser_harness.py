"""The browser helper itself: it must see a broken image and a console error, and nothing on a
clean page, else report tests built on it prove nothing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.image import imsave

from tests.browser import page_problems, screenshot

SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="40" height="30"><rect width="40" height="30" fill="teal"/></svg>'


def write_page(folder: Path, body: str) -> Path:
    """A page with its figures in a subfolder, like OUT/sub-01.html and OUT/sub-01/figures/."""
    figures = folder / "sub-01" / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    imsave(figures / "good.png", np.linspace(0, 1, 12 * 16).reshape(12, 16))
    (figures / "good.svg").write_text(SVG)
    page = folder / "sub-01.html"
    page.write_text("<!doctype html><html><head><meta charset='utf-8'><title>t</title></head>"
                    f"<body>{body}</body></html>")
    return page


GOOD = ('<img src="sub-01/figures/good.png"><img src="sub-01/figures/good.svg">'
        '<object data="sub-01/figures/good.svg" type="image/svg+xml"></object>')


def test_finds_missing_image_and_console_error(browser, tmp_path):
    page = write_page(tmp_path, GOOD + '<img src="sub-01/figures/missing.png"><script>console.error("boom")</script>')
    problems = page_problems(browser, page)
    assert problems["n_images"] == 4
    assert problems["broken_images"] == ["sub-01/figures/missing.png"]
    errors = problems["console_errors"]
    assert len(errors) == 2, errors  # the failed load of missing.png is logged as an error too
    assert any("missing.png" in e for e in errors) and any('"boom"' in e for e in errors)


def test_clean_page_has_no_problems(browser, tmp_path):
    problems = page_problems(browser, write_page(tmp_path, GOOD))
    assert problems == {"broken_images": [], "console_errors": [], "n_images": 3}


def test_full_page_screenshot(browser, tmp_path):
    page = write_page(tmp_path, GOOD + '<div style="height:2500px"></div><p>end</p>')
    png = screenshot(browser, page, tmp_path / "shots" / "sub-01.png")
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width == 1400 and height > 2500  # the whole page, not just the first window
