"""Take the playground screenshots in docs/images from a running clconv server.

    .venv/bin/python docs/images/make_screenshots.py --url http://127.0.0.1:8000

Needs Playwright (the `test` extra) and a Chromium binary (Debian: `apt-get install chromium`;
for the Chinese screenshot also a CJK font such as `fonts-wqy-microhei`). Each PNG is at most
1200×800 and reduced to a 256-colour palette to keep the repository small.
"""

from __future__ import annotations

import argparse
import io
import shutil
from pathlib import Path

from PIL import Image
from playwright.sync_api import Page, sync_playwright

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
VIEWPORT = {"width": 1200, "height": 800}
TIMEOUT_MS = 120_000

# File name, operation preset, interface language.
FAMILY_SHOTS = [
    ("playground_grouped.png", "conv2d_grouped", "en"),
    ("playground_depthwise.png", "conv2d_depthwise", "en"),
    ("playground_transposed.png", "conv_transpose2d", "en"),
    ("playground_depthwise_separable.png", "depthwise_separable_conv2d", "en"),
    ("playground_spatially_separable_zh.png", "spatially_separable_conv2d", "zh"),
]
# File name, operation preset, the output pixel (row, column) to hover.
EXPLAINER_SHOTS = [
    ("playground_explainer_transposed.png", "conv_transpose2d", (5, 5)),
    ("playground_explainer_dilated.png", "conv2d_dilated", (1, 2)),
]


def save_small(path: Path, png: bytes) -> None:
    """Write a screenshot cropped to 1200×800 and reduced to a 256-colour palette."""
    with Image.open(io.BytesIO(png)) as image:
        cropped = image.convert("RGB").crop((0, 0, min(image.width, 1200), min(image.height, 800)))
    cropped.quantize(colors=256).save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


def wait_idle(page: Page) -> None:
    page.wait_for_function(
        "() => !['running', 'loading'].includes(document.querySelector('#status').dataset.state)",
        timeout=TIMEOUT_MS,
    )


def run_operation(page: Page, op: str) -> None:
    page.select_option("#op", op)
    wait_idle(page)
    before = int(page.get_attribute("#status", "data-completed") or "0")
    page.click("#run")
    page.wait_for_function(
        f"() => Number(document.querySelector('#status').dataset.completed) > {before}",
        timeout=TIMEOUT_MS,
    )


def explainer_shot(page: Page, path: Path, op: str, hover: tuple[int, int]) -> None:
    page.select_option("#op", op)
    wait_idle(page)
    y, x = hover
    # Focus highlights like hovering, and the mouse is moved off the grid so that scrolling for
    # the screenshot cannot hover another cell.
    page.mouse.move(0, 0)
    page.focus(f"#explain-output .cell[data-y='{y}'][data-x='{x}']")
    save_small(path, page.locator("#explainer-section").screenshot())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent, help="output folder"
    )
    parser.add_argument(
        "--chromium", default=shutil.which("chromium"), help="path of the Chromium binary"
    )
    args = parser.parse_args()
    if not args.chromium:
        parser.error("Chromium not found; install it (apt-get install chromium) or pass --chromium")
    args.out.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT, locale="en-US")
        page.goto(args.url.rstrip("/") + "/")
        page.wait_for_selector("body[data-ready='true']", timeout=TIMEOUT_MS)
        page.uncheck("#auto-run")
        wait_idle(page)

        for name, op, language in FAMILY_SHOTS:
            page.click(f"button[data-lang='{language}']")
            run_operation(page, op)
            page.evaluate("() => window.scrollTo(0, 0)")
            save_small(args.out / name, page.screenshot())
        page.click("button[data-lang='en']")

        explainer_shot(
            page, args.out / "playground_explainer_transposed.png", "conv_transpose2d", (5, 5)
        )
        explainer_shot(
            page, args.out / "playground_explainer_dilated.png", "conv2d_dilated", (1, 2)
        )
        browser.close()


if __name__ == "__main__":
    main()
