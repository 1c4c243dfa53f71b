"""Drive the web playground in headless Chromium against the live test server.

Every convolution family runs on a sample photograph, and the checks read what the page shows:
the output shape, the figures, the canvas pixels, the errors by their fields, the language and
the hosts that the page contacts. The browser is Debian's `chromium` (or the binary that
`CLCONV_CHROMIUM` names), driven by Playwright; the module is skipped when neither is found.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
RUN_TIMEOUT_MS = 120_000


def find_chromium() -> str | None:
    configured = os.environ.get("CLCONV_CHROMIUM")
    if configured:
        return configured
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium not found: install Debian's chromium (apt-get install chromium) or set "
    "CLCONV_CHROMIUM to a Chromium binary",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


class PlaygroundPage:
    """One playground tab with auto-run off, and every request and page error it records."""

    def __init__(self, page: Page, server_url: str) -> None:
        self.page = page
        self.server_url = server_url
        self.requests: list[str] = []
        self.page_errors: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))

    def open(self) -> None:
        self.page.goto(self.server_url + "/")
        self.page.wait_for_selector("body[data-ready='true']", timeout=RUN_TIMEOUT_MS)
        self.page.uncheck("#auto-run")
        # The first automatic run may still be in flight; let it finish.
        self.page.wait_for_function(
            "() => !['running', 'loading'].includes("
            "document.querySelector('#status').dataset.state)",
            timeout=RUN_TIMEOUT_MS,
        )

    def choose_operation(self, op: str) -> None:
        self.page.select_option("#op", op)
        self.wait_until_loaded()

    def wait_until_loaded(self) -> None:
        self.page.wait_for_function(
            "() => document.querySelector('#status').dataset.state !== 'loading'",
            timeout=RUN_TIMEOUT_MS,
        )

    def run(self) -> str:
        """Click Run, wait for the response and return the status state (done or error)."""
        before = int(self.page.get_attribute("#status", "data-completed") or "0")
        self.page.click("#run")
        self.page.wait_for_function(
            f"() => Number(document.querySelector('#status').dataset.completed) > {before}",
            timeout=RUN_TIMEOUT_MS,
        )
        return str(self.page.get_attribute("#status", "data-state"))

    def text(self, selector: str) -> str:
        return (self.page.text_content(selector) or "").strip()

    def shown_errors(self) -> list[dict[str, str]]:
        script = """() => [...document.querySelectorAll('.field-error:not([hidden])')].map(e => ({
            text: e.textContent,
            field: e.dataset.field,
            owner: e.closest('[data-fields]') ? e.closest('[data-fields]').dataset.fields : ''
        }))"""
        errors: list[dict[str, str]] = self.page.evaluate(script)
        return errors

    def canvas_stats(self) -> dict[str, Any]:
        """Compare the input and output canvases pixel by pixel (where their sizes match)."""
        script = """() => {
            const read = (id) => {
                const canvas = document.getElementById(id);
                const { width, height } = canvas;
                const data = canvas.getContext('2d').getImageData(0, 0, width, height).data;
                return { width, height, data };
            };
            const input = read('input-canvas');
            const output = read('output-canvas');
            let sum = 0, sumSquares = 0, diff = 0;
            const n = output.width * output.height;
            for (let p = 0; p < n; p += 1) {
                for (let k = 0; k < 3; k += 1) {
                    const v = output.data[4 * p + k];
                    sum += v;
                    sumSquares += v * v;
                    if (input.width === output.width && input.height === output.height) {
                        diff += Math.abs(v - input.data[4 * p + k]);
                    }
                }
            }
            const mean = sum / (3 * n);
            return {
                input: [input.width, input.height],
                output: [output.width, output.height],
                meanAbsDiff: diff / (3 * n),
                outputStd: Math.sqrt(Math.max(0, sumSquares / (3 * n) - mean * mean)),
            };
        }"""
        stats: dict[str, Any] = self.page.evaluate(script)
        return stats


@pytest.fixture()
def playground(browser: Browser, server_url: str) -> Iterator[PlaygroundPage]:
    # A fresh context per test, so that a stored language does not leak between tests.
    context = browser.new_context(viewport={"width": 1200, "height": 800}, locale="en-US")
    page = context.new_page()
    wrapper = PlaygroundPage(page, server_url)
    wrapper.open()
    yield wrapper
    context.close()
    assert wrapper.page_errors == [], f"JavaScript errors on the page: {wrapper.page_errors}"


# ---------------------------------------------------------------------------------------------
# Serving


def test_index_served_with_policy(client: httpx.Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert '<script type="module" src="/playground/app.js">' in response.text


@pytest.mark.parametrize(
    "path",
    [
        "app.js",
        "explainer.js",
        "i18n.js",
        "presets.js",
        "tensors.js",
        "style.css",
        "astronaut.jpg",
        "coffee.jpg",
        "chelsea.jpg",
    ],
)
def test_static_file_served(client: httpx.Client, path: str) -> None:
    response = client.get(f"/playground/{path}")
    assert response.status_code == 200, response.text[:200]
    assert len(response.content) > 0


def test_package_data_contains_playground() -> None:
    files = resources.files("clconv.playground")
    for name in ("index.html", "app.js", "style.css", "i18n.js", "README.md"):
        assert files.joinpath(name).is_file(), name
    for sample in ("astronaut", "coffee", "chelsea"):
        assert files.joinpath(f"{sample}.jpg").is_file(), sample


# ---------------------------------------------------------------------------------------------
# Every family on a sample image

# op, input channels, expected output shape, whether the output image must differ from the input
# (None: the sizes differ, so the pixels are not compared).
FAMILIES = [
    ("conv2d_regular", 3, [1, 3, 256, 256], True),
    ("conv2d_pointwise", 3, [1, 3, 256, 256], True),
    ("conv2d_grouped", 6, [1, 6, 256, 256], True),
    ("conv2d_depthwise", 3, [1, 6, 256, 256], True),
    ("conv2d_dilated", 3, [1, 3, 256, 256], True),
    ("conv_transpose2d", 3, [1, 3, 512, 512], None),
    ("depthwise_separable_conv2d", 3, [1, 3, 256, 256], True),
    ("spatially_separable_conv2d", 3, [1, 3, 256, 256], True),
    ("pipeline", 3, [1, 3, 512, 512], None),
]


@pytest.mark.parametrize(
    ("op", "channels", "shape", "differs"), FAMILIES, ids=[f[0] for f in FAMILIES]
)
def test_family_runs_on_sample(
    playground: PlaygroundPage, op: str, channels: int, shape: list[int], differs: bool | None
) -> None:
    playground.choose_operation(op)
    state = playground.run()

    assert state == "done", playground.shown_errors()
    assert playground.text("#output-shape") == str(shape)
    assert playground.text("#stat-shape") == playground.text("#output-shape")
    assert playground.text("#input-shape") == str([1, channels, 256, 256])
    for stat in ("#stat-flops", "#stat-macs", "#stat-params"):
        assert playground.text(stat).replace(",", "").isdigit(), stat
    assert "×" in playground.text("#stat-receptive-field")
    assert playground.text("#stat-algorithm") != ""
    assert playground.text("#stat-device").split(" ")[0] == playground.page.input_value("#device")
    timing_rows = playground.page.eval_on_selector_all(
        "#timings tr", "rows => rows.map(r => r.dataset.timing)"
    )
    assert timing_rows == ["queue", "upload", "compute", "download", "total"]

    stats = playground.canvas_stats()
    assert stats["output"] == [shape[3], shape[2]]
    assert stats["outputStd"] > 5, "the output image is flat"
    if differs:
        assert stats["meanAbsDiff"] > 5, f"{op} left the image unchanged: {stats}"
    channel_views = playground.page.locator("#channels canvas").count()
    assert channel_views == shape[1]


def test_identity_kernel_keeps_image(playground: PlaygroundPage) -> None:
    playground.choose_operation("conv2d_regular")
    playground.page.select_option("#kernel-preset", "identity")
    playground.page.select_option("#mixing", "identity")
    playground.page.select_option("#display-mode", "clip")

    assert playground.run() == "done"

    stats = playground.canvas_stats()
    assert stats["output"] == stats["input"]
    assert stats["meanAbsDiff"] < 1.0, stats


def test_transposed_upsampling_matches_input(playground: PlaygroundPage) -> None:
    # Bilinear 2× upsampling: every second output pixel interpolates between input pixels, so the
    # output scaled back down stays close to the input.
    playground.choose_operation("conv_transpose2d")
    playground.page.select_option("#display-mode", "clip")
    assert playground.run() == "done"

    difference = playground.page.evaluate(
        """() => {
            const input = document.getElementById('input-canvas');
            const output = document.getElementById('output-canvas');
            const small = document.createElement('canvas');
            small.width = input.width;
            small.height = input.height;
            small.getContext('2d').drawImage(output, 0, 0, input.width, input.height);
            const a = input.getContext('2d').getImageData(0, 0, input.width, input.height).data;
            const b = small.getContext('2d').getImageData(0, 0, input.width, input.height).data;
            let diff = 0;
            for (let i = 0; i < a.length; i += 4) diff += Math.abs(a[i] - b[i]);
            return diff / (a.length / 4);
        }"""
    )
    assert difference < 12, difference


def test_uploaded_image_runs(playground: PlaygroundPage) -> None:
    buffer = io.BytesIO()
    gradient = Image.linear_gradient("L").resize((40, 30)).convert("RGB")
    gradient.save(buffer, format="PNG")
    playground.page.set_input_files(
        "#upload",
        files=[{"name": "gradient.png", "mimeType": "image/png", "buffer": buffer.getvalue()}],
    )
    playground.page.wait_for_function(
        "() => document.querySelector('#input-shape').textContent === '[1, 3, 30, 40]'",
        timeout=RUN_TIMEOUT_MS,
    )
    playground.wait_until_loaded()
    assert playground.page.input_value("#sample") == "upload"

    assert playground.run() == "done"
    assert playground.text("#output-shape") == "[1, 3, 30, 40]"


def test_grayscale_layout_has_one_channel(playground: PlaygroundPage) -> None:
    playground.choose_operation("conv2d_dilated")
    playground.page.select_option("#layout", "gray")
    playground.wait_until_loaded()

    assert playground.run() == "done"
    assert playground.text("#input-shape") == "[1, 1, 256, 256]"
    assert playground.text("#output-shape") == "[1, 1, 256, 256]"


# ---------------------------------------------------------------------------------------------
# Errors shown by the field they name


def test_stride_zero_shown_at_stride(playground: PlaygroundPage) -> None:
    playground.choose_operation("conv2d_regular")
    playground.page.fill("#stride-h", "0")

    assert playground.run() == "error"

    errors = playground.shown_errors()
    assert len(errors) == 1, errors
    assert errors[0]["field"] == "stride"
    assert "stride" in errors[0]["owner"].split()
    assert "stride must be >= 1" in errors[0]["text"]
    assert playground.page.get_attribute("#stride-h", "aria-invalid") == "true"


def test_groups_not_dividing_channels(playground: PlaygroundPage) -> None:
    playground.choose_operation("conv2d_grouped")
    playground.page.fill("#groups", "4")

    assert playground.run() == "error"

    errors = playground.shown_errors()
    assert len(errors) == 1, errors
    assert errors[0]["field"] == "groups"
    assert "groups" in errors[0]["owner"].split()
    assert "not divisible by groups 4" in errors[0]["text"]


def test_not_separable_shown_at_kernel(playground: PlaygroundPage) -> None:
    playground.choose_operation("spatially_separable_conv2d")
    playground.page.select_option("#kernel-preset", "sharpen")  # rank 2, so not separable

    assert playground.run() == "error"

    errors = playground.shown_errors()
    assert len(errors) == 1, errors
    assert errors[0]["field"] == "weight"
    assert "weight" in errors[0]["owner"].split()
    assert "not_separable" in errors[0]["text"]


def test_same_padding_rejected_for_transposed(playground: PlaygroundPage) -> None:
    playground.choose_operation("conv_transpose2d")
    playground.page.select_option("#padding-form", "same")

    assert playground.run() == "error"

    errors = playground.shown_errors()
    assert len(errors) == 1, errors
    assert errors[0]["field"] == "padding"
    assert "padding" in errors[0]["owner"].split()


def test_error_clears_after_fix(playground: PlaygroundPage) -> None:
    playground.choose_operation("conv2d_regular")
    playground.page.fill("#stride-h", "0")
    assert playground.run() == "error"

    playground.page.fill("#stride-h", "2")
    assert playground.run() == "done"

    assert playground.shown_errors() == []
    # Stride [2, 1]: only the height halves.
    assert playground.text("#output-shape") == "[1, 3, 128, 256]"


# ---------------------------------------------------------------------------------------------
# Explainer


def test_explainer_hover_highlights_taps(playground: PlaygroundPage) -> None:
    playground.choose_operation("conv2d_regular")  # 3×3 kernel, padding 1, stride 1, 9×9 input
    playground.page.hover("#explain-output .cell[data-y='0'][data-x='0']")

    assert playground.page.locator("#explain-input .cell.tap").count() == 9
    assert playground.page.locator("#explain-input .cell.pad.tap").count() == 5
    assert playground.page.locator("#explain-kernel .cell.active").count() == 9
    assert playground.text("#explain-pixel").startswith("out[0, 0]")
    assert "5 on padding" in playground.text("#explain-pixel")


def test_explainer_transposed_zero_insertion(playground: PlaygroundPage) -> None:
    # 5×5 input, stride 2, 4×4 kernel, padding 1: 9×9 after zero insertion, 2 padding rows each
    # side, a 10×10 output.
    playground.choose_operation("conv_transpose2d")

    assert "13×13" in playground.text("#explain-input figcaption")
    assert "10×10" in playground.text("#explain-output figcaption")
    assert playground.page.locator("#explain-input .cell.inserted").count() == 9 * 9 - 5 * 5
    playground.page.hover("#explain-output .cell[data-y='5'][data-x='5']")
    assert playground.page.locator("#explain-input .cell.input.tap").count() == 4
    assert playground.page.locator("#explain-kernel .cell.active").count() == 4


def test_explainer_dilation_growth(playground: PlaygroundPage) -> None:
    playground.choose_operation("conv2d_dilated")  # 3×3 Laplacian, dilation 4

    assert "9×9" in playground.text("#explain-kernel figcaption")
    assert playground.page.locator("#explain-kernel .cell.kernel-tap").count() == 9
    labels = playground.page.eval_on_selector_all(
        ".rf-chart .rf-doubling + .bar-label", "labels => labels.map(l => l.textContent)"
    )
    assert labels == ["3", "7", "15", "31", "63", "127"]
    linear = playground.page.eval_on_selector_all(
        ".rf-chart .rf-linear + .bar-label", "labels => labels.map(l => l.textContent)"
    )
    assert linear == ["3", "5", "7", "9", "11", "13"]


# ---------------------------------------------------------------------------------------------
# Language and hosts


def test_language_switch_persists(playground: PlaygroundPage) -> None:
    page = playground.page
    assert playground.text("h1") == "clconv playground"

    page.click("button[data-lang='zh']")

    assert playground.text("h1") == "clconv 演示平台"
    assert page.get_attribute("html", "lang") == "zh-CN"
    assert playground.text("label[for='stride-h']") == "步长（h, w）"
    assert page.evaluate("() => localStorage.getItem('clconv.playground.language')") == "zh"

    page.reload()
    page.wait_for_selector("body[data-ready='true']", timeout=RUN_TIMEOUT_MS)
    assert playground.text("h1") == "clconv 演示平台"
    assert page.get_attribute("html", "lang") == "zh-CN"

    page.click("button[data-lang='en']")
    assert playground.text("h1") == "clconv playground"


def test_page_contacts_only_server(playground: PlaygroundPage) -> None:
    for op in ("conv2d_depthwise", "conv_transpose2d"):
        playground.choose_operation(op)
        assert playground.run() == "done"
    playground.page.click("button[data-lang='zh']")

    server = urlsplit(playground.server_url).netloc
    assert playground.requests, "no request was recorded"
    for url in playground.requests:
        parts = urlsplit(url)
        assert parts.scheme in ("http", "data", "blob"), url
        if parts.scheme == "http":
            assert parts.netloc == server, url
    api_calls = [url for url in playground.requests if "/v1/" in url]
    assert any(url.endswith("/v1/devices") for url in api_calls)
    assert any(url.endswith("/v1/plan") for url in api_calls)
