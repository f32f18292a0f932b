"""`scalegan serve`'s page in a real browser: Debian's ``chromium`` driven by Playwright for Python (sync API,
``executable_path``; no browser download). The real server runs in a subprocess on a free loopback port; the test
picks a class by searching its name, generates, checks the grid is shown at the size the server makes it (enlarged by
a whole factor), plays an interpolation, and checks that a bad input shows the server's error on the page; then it
uploads an image, paints a hole, restores it and edits it (a SeFa slider, a class morph).

Needs the ``dev`` extra (``playwright``) and Debian's ``chromium`` (``scripts/setup.sh dev`` installs both). Without
them the test fails and says what to install: tests never skip to go green. ``SCALEGAN_SCREENSHOTS=DIR`` also saves
``DIR/serve_page.png`` and ``DIR/serve_page_error.png``."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import scalegan
from scalegan.weights import save_generator

FMNIST = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
CHROMIUM = os.environ.get("SCALEGAN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def _chromium() -> str:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"no chromium at {CHROMIUM}: install Debian's package (sudo apt-get install chromium, or "
                    "scripts/setup.sh dev), or set SCALEGAN_CHROMIUM to a Chromium binary")
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The URL of a real ``scalegan serve`` (uvicorn in a subprocess) serving a small Fashion-MNIST BigGAN."""
    import httpx

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("browser") / "fmnist"
    save_generator(scalegan.create_model("biggan-fmnist", ch=8, d_ch=8)[0], folder, class_names=FMNIST)
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "scalegan", "serve", str(folder), "--port", str(port),
                                "--threads", "1", "--invert-steps", "30", "--max-tune", "20"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read()
            try:
                httpx.get(url + "/health", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def page(server):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser test needs Playwright for Python: pip install -c constraints.txt playwright (or "
                    "pip install -e '.[dev]'); no browser download: it drives Debian's chromium")
    executable = _chromium()
    with sync_playwright() as p:
        # --no-sandbox: Chromium's sandbox refuses to start as root (CI containers).
        browser = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            page.errors, page.failed = [], []  # uncaught JavaScript errors; responses >= 400 (path, status)
            page.on("pageerror", lambda e: page.errors.append(str(e)))
            page.on("response", lambda r: page.failed.append((r.url.removeprefix(server), r.status))
                    if r.status >= 400 else None)
            page.goto(server + "/")
            yield page
        finally:
            browser.close()


def _screenshot(page, name: str) -> None:
    folder = os.environ.get("SCALEGAN_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), full_page=True)


def grid_size(resolution: int, n: int, nrow: int, padding: int = 2) -> tuple[int, int]:
    """(width, height) of the server's PNG grid (``sampling.make_grid``): ``nrow`` images per row, 2 px gaps."""
    rows = -(-n // nrow)
    return nrow * (resolution + padding) + padding, rows * (resolution + padding) + padding


def test_page_generates_interpolates_and_shows_errors(page):
    from playwright.sync_api import expect

    expect(page.get_by_test_id("status")).to_have_text("1 model")
    expect(page.get_by_test_id("model-info")).to_contain_text("32 px, 10 classes")
    page.get_by_test_id("class-search").fill("boot")
    classes = page.get_by_test_id("class-list")
    expect(classes).to_have_value("9")  # the first match is picked: "9: ankle boot"
    assert "ankle boot" in classes.locator("option:checked").inner_text()

    n = 12  # one request, one grid: min(n, 8) images per row
    page.get_by_test_id("n").fill(str(n))
    page.get_by_test_id("seed").fill("3")
    page.get_by_test_id("generate").click()
    grid = page.get_by_test_id("grid")
    expect(grid).to_be_visible()
    page.wait_for_function("document.querySelector('[data-testid=grid]').complete")
    size = grid.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert tuple(size) == grid_size(32, n, 8) == (274, 70)
    box = grid.bounding_box()["width"]  # shown enlarged by a whole factor (nearest neighbour), not a 0 px image
    assert box >= 2 * 274 and round(box) % 274 == 0, box
    assert grid.evaluate("img => getComputedStyle(img).imageRendering") == "pixelated"
    expect(page.get_by_test_id("error")).to_be_hidden()
    expect(page.get_by_test_id("download-png")).to_be_visible()

    page.get_by_test_id("steps").fill("4")
    page.get_by_test_id("interpolate").click()
    animation = page.get_by_test_id("animation")
    expect(animation).to_be_visible()
    page.wait_for_function("document.querySelector('[data-testid=animation]').complete")
    assert tuple(animation.evaluate("img => [img.naturalWidth, img.naturalHeight]")) == (32, 32)
    _screenshot(page, "serve_page.png")

    page.get_by_test_id("n").fill("65")  # over the server's limit of 64 images per request
    page.get_by_test_id("generate").click()
    error = page.get_by_test_id("error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("n must be 1..64")
    _screenshot(page, "serve_page_error.png")
    page.get_by_test_id("n").fill("2")
    page.get_by_test_id("generate").click()
    expect(error).to_be_hidden()  # a good request clears the error
    assert not page.errors, page.errors
    assert page.failed == [("/v1/generate", 422)]  # the bad input only (no favicon or other request failed)


def test_page_restores_an_upload_and_edits_it(page, tmp_path):
    """Upload a photo, paint a hole, restore it (inpaint), see the result enlarged beside the input, then move a
    SeFa slider and morph towards another class: each changes the edited image. No JavaScript error."""
    from PIL import Image
    from playwright.sync_api import expect

    rng = np.random.default_rng(0)
    photo = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (48, 40), dtype=np.uint8)).save(photo)
    page.get_by_test_id("upload").set_input_files(str(photo))
    canvas = page.get_by_test_id("input-canvas")
    expect(page.get_by_test_id("restore")).to_be_enabled()
    page.get_by_test_id("task").select_option("inpaint")
    box = canvas.bounding_box()
    assert box["width"] == 160  # a 40 px upload shown at 4x
    page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.4)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.6, steps=5)
    page.mouse.up()
    red = canvas.evaluate("c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0; "
                          "for (let i = 0; i < d.length; i += 4) if (d[i] > 200 && d[i + 1] < 60) n++; return n; }")
    assert red > 40, red  # the painted hole shows on the input
    page.get_by_test_id("tune").fill("5")
    page.get_by_test_id("restore").click()
    result = page.get_by_test_id("result")
    expect(result).to_be_visible(timeout=60_000)
    page.wait_for_function("document.querySelector('[data-testid=result]').complete")
    assert tuple(result.evaluate("img => [img.naturalWidth, img.naturalHeight]")) == (32, 32)
    assert result.bounding_box()["width"] == 192  # 6x, nearest neighbour; the download is the 32 px PNG
    expect(page.get_by_test_id("result-caption")).to_contain_text("PSNR")
    expect(page.get_by_test_id("edit-box")).to_be_visible()
    expect(page.get_by_test_id("download-latents")).to_be_visible()

    def edited_after(action):
        before = page.get_by_test_id("edited").get_attribute("src")
        action()
        page.wait_for_function("([b]) => { const e = document.querySelector('[data-testid=edited]'); "
                               "return e.src && e.src !== b && e.complete; }", arg=[before or ""], timeout=30_000)
        return page.get_by_test_id("edited").evaluate(
            "img => { const c = document.createElement('canvas'); c.width = img.naturalWidth; "
            "c.height = img.naturalHeight; const g = c.getContext('2d'); g.drawImage(img, 0, 0); "
            "return Array.from(g.getImageData(0, 0, c.width, c.height).data); }")

    slide = "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }"
    moved = edited_after(lambda: page.get_by_test_id("direction-0").evaluate(slide, "4"))
    page.get_by_test_id("morph-class").fill("bag")
    morphed = edited_after(lambda: page.get_by_test_id("morph").evaluate(slide, "1"))
    assert np.abs(np.array(moved) - np.array(morphed)).mean() > 1
    _screenshot(page, "serve_restore.png")
    expect(page.get_by_test_id("error")).to_be_hidden()
    assert not page.errors, page.errors
    assert [f for f in page.failed if f[0] != "/v1/generate"] == []
