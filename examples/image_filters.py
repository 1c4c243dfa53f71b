"""Classic image filters on a real photograph, computed by a running clconv server.

The script loads scikit-image's bundled astronaut photograph (512x512 RGB, no download), sends
it as a float32 NCHW tensor in base64 and runs four operations on the server:

* Sobel x and y edges through ``POST /v1/spatially_separable_conv2d`` with explicit factors
  (vertical [1, 2, 1] smoothing, horizontal [-1, 0, 1] derivative, and the transpose for y),
  combined here into an edge magnitude;
* a 9x9 Gaussian blur (sigma 2) sent as one rank-1 ``weight`` to the same endpoint, so the
  server factors it by SVD;
* a 3x3 Laplacian with dilation 4 through ``POST /v1/conv2d``;
* a 2x bilinear upsampling through ``POST /v1/conv_transpose2d`` (4x4 kernel, stride 2,
  padding 1, one group per channel).

Every filter is depthwise (``groups`` = 3), so each colour channel is filtered on its own.
Each result is checked against ``torch.nn.functional`` on the same input, saved as a PNG next
to the input, and timed: the script prints a markdown table of the server's ``timings_ms`` and
writes it to ``OUT/timings.md``. It exits with status 1 when a result differs from PyTorch by
more than ``1e-4 * (1 + max |reference|)`` or when the server returns an error.

Run it against a server started with ``python -m clconv serve --host 127.0.0.1 --port 8000``:

    python examples/image_filters.py --url http://127.0.0.1:8000 --out /tmp/clconv-filters
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data

DEFAULT_URL = "http://127.0.0.1:8000"
REQUEST_TIMEOUT_S = 120.0
# Each output sums at most 81 float32 products, so it differs from the float64 reference by
# rounding only.
RELATIVE_TOLERANCE = 1e-4
TIMING_HEADERS = [
    "operation",
    "output shape",
    "algorithm",
    "device",
    "queue ms",
    "upload ms",
    "compute ms",
    "download ms",
    "total ms",
    "round trip ms",
    "max abs error",
]


@dataclass
class FilterResult:
    """One server call: its output, the PyTorch reference and the response's metadata."""

    name: str
    output: np.ndarray
    reference: np.ndarray
    response: dict[str, Any]
    round_trip_ms: float

    @property
    def shapes_match(self) -> bool:
        return self.output.shape == self.reference.shape

    @property
    def max_abs_error(self) -> float:
        """Largest |output - reference|, or infinity when the shapes differ."""
        if not self.shapes_match:
            return float("inf")
        return float(np.max(np.abs(self.output.astype(np.float64) - self.reference)))

    @property
    def tolerance(self) -> float:
        return RELATIVE_TOLERANCE * (1.0 + float(np.max(np.abs(self.reference))))


def encode_tensor(array: np.ndarray) -> dict[str, Any]:
    """Encode a float32 array as a clconv tensor with little-endian base64 data."""
    little_endian = np.ascontiguousarray(array, dtype="<f4")
    return {
        "shape": list(little_endian.shape),
        "dtype": "float32",
        "base64": base64.b64encode(little_endian.tobytes()).decode("ascii"),
    }


def decode_tensor(tensor: dict[str, Any]) -> np.ndarray:
    """Decode a clconv tensor object (base64 or JSON data) into a native-endian numpy array."""
    dtype = np.dtype(tensor["dtype"]).newbyteorder("<")
    if "base64" in tensor:
        flat = np.frombuffer(base64.b64decode(tensor["base64"]), dtype=dtype)
    else:
        flat = np.asarray(tensor["data"], dtype=dtype).reshape(-1)
    return flat.reshape(tensor["shape"]).astype(dtype.newbyteorder("="))


def post(client: httpx.Client, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """POST a JSON body and return the decoded response and the round-trip time in ms.

    Exits the script with a message when the server is unreachable or the status is not 2xx.
    """
    start = time.perf_counter()
    try:
        response = client.post(path, json=body)
    except httpx.TransportError as error:
        sys.exit(f"POST {client.base_url}{path} failed: {error}. Is the clconv server running?")
    round_trip_ms = (time.perf_counter() - start) * 1000.0
    if response.is_error:
        sys.exit(f"POST {path} failed with HTTP {response.status_code}: {response.text}")
    result: dict[str, Any] = response.json()
    return result, round_trip_ms


def device_field(device: str | None) -> dict[str, str]:
    """Return the optional ``device`` request field. Without it the server uses its default."""
    return {} if device is None else {"device": device}


def load_photograph() -> np.ndarray:
    """Return scikit-image's astronaut photograph as float32 NCHW in [0, 1], shape [1, 3, H, W]."""
    rgb = data.astronaut().astype(np.float32) / 255.0
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[np.newaxis])


def depthwise(kernel: np.ndarray, channels: int) -> np.ndarray:
    """Repeat a 2-D kernel into a depthwise weight of shape [channels, 1, kh, kw]."""
    return np.ascontiguousarray(np.tile(kernel.astype(np.float32), (channels, 1, 1, 1)))


def gaussian_kernel_1d(size: int, sigma: float) -> np.ndarray:
    """Return a normalised 1-D Gaussian of odd length ``size``."""
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    values = np.exp(-(offsets**2) / (2.0 * sigma**2))
    return values / values.sum()


def bilinear_kernel_1d(factor: int) -> np.ndarray:
    """Return the 1-D bilinear interpolation kernel of length ``2 * factor`` for ``factor``x."""
    size = 2 * factor
    center = (size - 1) / 2.0
    return 1.0 - np.abs(np.arange(size) - center) / factor


def torch_conv2d(
    image: np.ndarray,
    weight: np.ndarray,
    padding: int,
    padding_mode: str,
    dilation: int = 1,
) -> np.ndarray:
    """Compute the depthwise PyTorch reference in float64, padding as clconv's padding_mode."""
    x = torch.from_numpy(image).double()
    w = torch.from_numpy(weight).double()
    if padding_mode == "zeros":
        return F.conv2d(x, w, padding=padding, dilation=dilation, groups=x.shape[1]).numpy()
    padded = F.pad(x, (padding, padding, padding, padding), mode=padding_mode)
    return F.conv2d(padded, w, dilation=dilation, groups=x.shape[1]).numpy()


def run_sobel(
    client: httpx.Client, image: np.ndarray, device: str | None
) -> tuple[FilterResult, FilterResult]:
    """Run Sobel x and y with explicit vertical and horizontal factors on the separable endpoint."""
    smoothing = np.array([1.0, 2.0, 1.0])
    derivative = np.array([-1.0, 0.0, 1.0])
    channels = image.shape[1]
    results = []
    for name, vertical, horizontal in (
        ("sobel_x", smoothing, derivative),
        ("sobel_y", derivative, smoothing),
    ):
        body = {
            "input": encode_tensor(image),
            "vertical_weight": encode_tensor(depthwise(vertical.reshape(3, 1), channels)),
            "horizontal_weight": encode_tensor(depthwise(horizontal.reshape(1, 3), channels)),
            "padding": 1,
            "padding_mode": "replicate",
            "groups": channels,
            **device_field(device),
        }
        response, round_trip_ms = post(client, "/v1/spatially_separable_conv2d", body)
        full_kernel = depthwise(np.outer(vertical, horizontal), channels)
        reference = torch_conv2d(image, full_kernel, padding=1, padding_mode="replicate")
        output = decode_tensor(response["output"])
        results.append(FilterResult(name, output, reference, response, round_trip_ms))
    return results[0], results[1]


def run_gaussian_blur(
    client: httpx.Client, image: np.ndarray, device: str | None, size: int = 9, sigma: float = 2.0
) -> FilterResult:
    """Send a rank-1 k x k Gaussian as one ``weight`` so that the server factors it."""
    profile = gaussian_kernel_1d(size, sigma)
    weight = depthwise(np.outer(profile, profile), image.shape[1])
    padding = size // 2
    body = {
        "input": encode_tensor(image),
        "weight": encode_tensor(weight),
        "padding": padding,
        "padding_mode": "reflect",
        "groups": image.shape[1],
        **device_field(device),
    }
    response, round_trip_ms = post(client, "/v1/spatially_separable_conv2d", body)
    reference = torch_conv2d(image, weight, padding=padding, padding_mode="reflect")
    output = decode_tensor(response["output"])
    return FilterResult("gaussian_blur", output, reference, response, round_trip_ms)


def run_dilated_laplacian(
    client: httpx.Client, image: np.ndarray, device: str | None, dilation: int = 4
) -> FilterResult:
    """Run a 3x3 Laplacian with dilation 4 (a 9x9 footprint) through ``POST /v1/conv2d``."""
    laplacian = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
    weight = depthwise(laplacian, image.shape[1])
    body = {
        "input": encode_tensor(image),
        "weight": encode_tensor(weight),
        "padding": dilation,
        "padding_mode": "reflect",
        "dilation": dilation,
        "groups": image.shape[1],
        **device_field(device),
    }
    response, round_trip_ms = post(client, "/v1/conv2d", body)
    reference = torch_conv2d(
        image, weight, padding=dilation, padding_mode="reflect", dilation=dilation
    )
    output = decode_tensor(response["output"])
    return FilterResult("dilated_laplacian", output, reference, response, round_trip_ms)


def run_upsampling(client: httpx.Client, image: np.ndarray, device: str | None) -> FilterResult:
    """Upsample 2x with a depthwise transposed convolution and a 4x4 bilinear kernel.

    Away from the 1-pixel border this equals ``F.interpolate(mode="bilinear",
    align_corners=False)``. At the border only 3/4 of the kernel overlaps the image, so the
    outermost rows and columns come out darker.
    """
    profile = bilinear_kernel_1d(factor=2)
    # conv_transpose2d weights are [C_in, C_out / groups, kh, kw], so depthwise is [C, 1, 4, 4].
    weight = depthwise(np.outer(profile, profile), image.shape[1])
    body = {
        "input": encode_tensor(image),
        "weight": encode_tensor(weight),
        "stride": 2,
        "padding": 1,
        "groups": image.shape[1],
        **device_field(device),
    }
    response, round_trip_ms = post(client, "/v1/conv_transpose2d", body)
    reference = F.conv_transpose2d(
        torch.from_numpy(image).double(),
        torch.from_numpy(weight).double(),
        stride=2,
        padding=1,
        groups=image.shape[1],
    ).numpy()
    output = decode_tensor(response["output"])
    return FilterResult("upsampled_2x", output, reference, response, round_trip_ms)


def to_image(tensor: np.ndarray) -> np.ndarray:
    """Convert one [1, C, H, W] tensor in [0, 1] to an HxWxC (or HxW) uint8 array."""
    pixels = np.clip(tensor[0].transpose(1, 2, 0), 0.0, 1.0)
    if pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    return np.round(pixels * 255.0).astype(np.uint8)


def normalise_unsigned(tensor: np.ndarray, percentile: float = 99.5) -> np.ndarray:
    """Scale a non-negative tensor so that its ``percentile`` maps to 1 (outliers saturate)."""
    scale = float(np.percentile(tensor, percentile))
    return tensor / scale if scale > 0 else tensor


def normalise_signed(tensor: np.ndarray, percentile: float = 99.5) -> np.ndarray:
    """Map a signed tensor to [0, 1] with zero at mid grey, scaled by the ``percentile`` of |x|."""
    scale = float(np.percentile(np.abs(tensor), percentile))
    return 0.5 + 0.5 * (tensor / scale if scale > 0 else tensor)


def edge_magnitude(sobel_x: np.ndarray, sobel_y: np.ndarray) -> np.ndarray:
    """Combine per-channel Sobel responses into one [1, 1, H, W] gradient magnitude."""
    return np.sqrt(np.sum(sobel_x**2 + sobel_y**2, axis=1, keepdims=True))


def save_png(tensor: np.ndarray, path: Path) -> None:
    Image.fromarray(to_image(tensor)).save(path)
    print(f"saved {path}")


def save_images(out_dir: Path, image: np.ndarray, results: dict[str, FilterResult]) -> list[Path]:
    """Write the input and every result, normalised for display, as PNGs into ``out_dir``."""
    magnitude = edge_magnitude(results["sobel_x"].output, results["sobel_y"].output)
    images = {
        "input.png": image,
        "sobel_magnitude.png": normalise_unsigned(magnitude),
        "gaussian_blur.png": results["gaussian_blur"].output,
        "dilated_laplacian.png": normalise_signed(results["dilated_laplacian"].output),
        "upsampled_2x.png": results["upsampled_2x"].output,
    }
    paths = []
    for file_name, tensor in images.items():
        save_png(tensor, out_dir / file_name)
        paths.append(out_dir / file_name)
    return paths


def timing_row(result: FilterResult) -> list[str]:
    """Format one table row from a response's ``timings_ms``, algorithm and device."""
    timings = result.response["timings_ms"]
    return [
        result.name,
        "x".join(str(size) for size in result.output.shape),
        " + ".join(result.response["algorithm"]),
        result.response["device"]["id"],
        f"{timings['queue']:.2f}",
        f"{timings['upload']:.2f}",
        f"{timings['compute']:.2f}",
        f"{timings['download']:.2f}",
        f"{timings['total']:.2f}",
        f"{result.round_trip_ms:.1f}",
        f"{result.max_abs_error:.2e}",
    ]


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def timings_document(image: np.ndarray, results: list[FilterResult], table: str) -> str:
    """Return the text of timings.md: a heading, the input and device, then the table."""
    device = results[0].response["device"]
    return (
        "# image_filters.py timings\n\n"
        f"Input: scikit-image's astronaut photograph, {list(image.shape)} float32. "
        f"Device: {device['id']} ({device['name']}, {device['platform']}).\n"
        "Queue to total come from each response's `timings_ms`. The client measures the round "
        "trip, which adds HTTP, JSON and base64 work and any kernel build on first use.\n\n"
        f"{table}"
    )


def check_against_torch(results: list[FilterResult]) -> bool:
    """Print each result's max abs error against PyTorch and return whether all are in tolerance."""
    print("\nverification against torch.nn.functional (float64 reference):")
    all_close = True
    for result in results:
        close = result.shapes_match and result.max_abs_error <= result.tolerance
        all_close = all_close and close
        error = f"{result.max_abs_error:.2e}" if result.shapes_match else "shape mismatch"
        verdict = "ok" if close else "FAILED"
        print(
            f"  {result.name:<18} max abs error {error} "
            f"(tolerance {result.tolerance:.1e}, output {list(result.output.shape)}, "
            f"reference {list(result.reference.shape)}): {verdict}"
        )
    return all_close


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url", default=DEFAULT_URL, help=f"server base URL (default {DEFAULT_URL})"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("filters-out"),
        help="folder for the PNGs and timings.md (default filters-out)",
    )
    parser.add_argument(
        "--device", default=None, help="device id from GET /v1/devices (default: server default)"
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    image = load_photograph()
    print(f"input: scikit-image astronaut, NCHW {list(image.shape)} float32 in [0, 1]")

    with httpx.Client(base_url=args.url, timeout=REQUEST_TIMEOUT_S) as client:
        sobel_x, sobel_y = run_sobel(client, image, args.device)
        results = [
            sobel_x,
            sobel_y,
            run_gaussian_blur(client, image, args.device),
            run_dilated_laplacian(client, image, args.device),
            run_upsampling(client, image, args.device),
        ]

    save_images(args.out, image, {result.name: result for result in results})
    all_close = check_against_torch(results)

    table = markdown_table(TIMING_HEADERS, [timing_row(result) for result in results])
    (args.out / "timings.md").write_text(timings_document(image, results, table))
    print("\nserver timings (timings_ms from each response; round trip measured by this client):\n")
    print(table)
    print(f"wrote {args.out / 'timings.md'}")

    if not all_close:
        print("FAILED: at least one result differs from PyTorch beyond tolerance", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
