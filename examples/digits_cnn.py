"""Run the convolution layers of a small PyTorch CNN on a clconv server.

The script trains a two-convolution CNN on scikit-learn's bundled handwritten digits (1797
8x8 images, no download) on the CPU with a fixed seed. It then sends the held-out test split
through ``POST /v1/pipeline`` as two ``conv2d`` steps with bias and ``"activation": "relu"``,
which run back to back on one OpenCL device. The final linear layer runs here in PyTorch on
the features that the server returns. The script prints

* the largest difference between the server's features and PyTorch's,
* how many predicted classes agree with PyTorch's own predictions,
* the test accuracy of both, and
* the pipeline's per-step algorithm and compute time and its upload/compute/download totals.

It exits with status 1 when fewer than 99% of the predictions agree, and with the server's
error message when a request fails.

Run it against a server started with ``python -m clconv serve --host 127.0.0.1 --port 8000``:

    python examples/digits_cnn.py --url http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
from typing import Any

import httpx
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

DEFAULT_URL = "http://127.0.0.1:8000"
REQUEST_TIMEOUT_S = 120.0
SEED = 0
TEST_FRACTION = 0.25
EPOCHS = 20
TRAIN_BATCH_SIZE = 64
LEARNING_RATE = 3e-3
MIN_AGREEMENT = 0.99
TIMING_PHASES = ("queue", "upload", "compute", "download", "total")


class DigitsCNN(nn.Module):
    """Small CNN: conv 1->8 3x3 pad 1, ReLU, conv 8->16 3x3 stride 2 pad 1, ReLU, linear 256->10."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, kernel_size=3, stride=2, padding=1)
        self.classifier = nn.Linear(16 * 4 * 4, 10)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Return the convolution stack's output, [N, 16, 4, 4] for 8x8 inputs."""
        return torch.relu(self.conv2(torch.relu(self.conv1(images))))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Return the logits for features shaped like ``features()``'s output."""
        return self.classifier(features.flatten(start_dim=1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(images))


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


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split the digits into train and test images and labels, with images NCHW in [0, 1]."""
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, np.newaxis]
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=TEST_FRACTION, random_state=SEED, stratify=labels
    )
    return x_train, x_test, y_train, y_test


def train(model: DigitsCNN, images: np.ndarray, labels: np.ndarray, epochs: int) -> None:
    """Train with Adam and cross-entropy on shuffled mini-batches, printing the loss per epoch."""
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    loss_function = nn.CrossEntropyLoss()
    x = torch.from_numpy(images)
    y = torch.from_numpy(labels)
    generator = torch.Generator().manual_seed(SEED)
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(x), generator=generator)
        total_loss = 0.0
        for first in range(0, len(x), TRAIN_BATCH_SIZE):
            batch = order[first : first + TRAIN_BATCH_SIZE]
            optimizer.zero_grad()
            loss = loss_function(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(batch)
        if epoch == 1 or epoch % 5 == 0 or epoch == epochs:
            print(f"  epoch {epoch:>2}/{epochs}: mean loss {total_loss / len(x):.4f}")
    print(f"trained in {time.perf_counter() - start:.1f} s")


def pipeline_body(model: DigitsCNN, images: np.ndarray, device: str | None) -> dict[str, Any]:
    """Build the ``/v1/pipeline`` request that mirrors ``model.features``."""

    def conv_step(layer: nn.Conv2d) -> dict[str, Any]:
        if layer.bias is None:
            raise ValueError(f"{layer} has no bias, but each pipeline step sends one")
        return {
            "op": "conv2d",
            "weight": encode_tensor(layer.weight.detach().numpy()),
            "bias": encode_tensor(layer.bias.detach().numpy()),
            "stride": list(layer.stride),
            "padding": list(layer.padding),
            "activation": "relu",
        }

    body: dict[str, Any] = {
        "input": encode_tensor(images),
        "steps": [conv_step(model.conv1), conv_step(model.conv2)],
    }
    if device is not None:
        body["device"] = device
    return body


def run_pipeline(
    client: httpx.Client,
    model: DigitsCNN,
    images: np.ndarray,
    batch_size: int,
    device: str | None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Send ``images`` through the server in batches and return the features and responses."""
    features = []
    responses = []
    for first in range(0, len(images), batch_size):
        body = pipeline_body(model, images[first : first + batch_size], device)
        try:
            response = client.post("/v1/pipeline", json=body)
        except httpx.TransportError as error:
            hint = "Is the clconv server running?"
            sys.exit(f"POST {client.base_url}/v1/pipeline failed: {error}. {hint}")
        if response.is_error:
            sys.exit(f"POST /v1/pipeline failed with HTTP {response.status_code}: {response.text}")
        result: dict[str, Any] = response.json()
        features.append(decode_tensor(result["output"]))
        responses.append(result)
    return np.concatenate(features), responses


def format_algorithm(algorithm: str | list[str]) -> str:
    return algorithm if isinstance(algorithm, str) else " + ".join(algorithm)


def print_timings(responses: list[dict[str, Any]]) -> None:
    """Print each batch's per-step algorithm and compute time and the pipeline totals."""
    print("\n| batch | step | op | output shape | algorithm | compute ms |")
    print("|---|---|---|---|---|---|")
    for batch_index, response in enumerate(responses):
        for step_index, step in enumerate(response["steps"]):
            shape = "x".join(str(size) for size in step["output_shape"])
            print(
                f"| {batch_index} | {step_index} | {step['op']} | {shape} | "
                f"{format_algorithm(step['algorithm'])} | {step['compute_ms']:.3f} |"
            )
    print("\n| batch | device | queue ms | upload ms | compute ms | download ms | total ms |")
    print("|---|---|---|---|---|---|---|")
    for batch_index, response in enumerate(responses):
        timings = response["timings_ms"]
        durations = [f"{timings[phase]:.3f}" for phase in TIMING_PHASES]
        print("| " + " | ".join([str(batch_index), response["device"]["id"], *durations]) + " |")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url", default=DEFAULT_URL, help=f"server base URL (default {DEFAULT_URL})"
    )
    parser.add_argument(
        "--device", default=None, help="device id from GET /v1/devices (default: server default)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=0,
        help="test images per pipeline request (default 0: the whole test split in one request)",
    )
    parser.add_argument(
        "--epochs", type=int, default=EPOCHS, help=f"training epochs (default {EPOCHS})"
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.batch_size < 0:
        sys.exit(f"--batch-size must be >= 0 (0 sends the whole test split), got {args.batch_size}")
    # The layers are too small for intra-op threads to pay off. On a loaded 2-core VM, 20 epochs
    # took 1.2 s with one thread and 14 s with two.
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    x_train, x_test, y_train, y_test = load_split()
    print(f"digits: {len(x_train)} training and {len(x_test)} test images of 8x8, seed {SEED}")

    model = DigitsCNN()
    train(model, x_train, y_train, args.epochs)
    model.eval()

    with torch.no_grad():
        torch_features = model.features(torch.from_numpy(x_test))
        torch_predictions = model.classify(torch_features).argmax(dim=1).numpy()

    batch_size = args.batch_size if args.batch_size > 0 else len(x_test)
    with httpx.Client(base_url=args.url, timeout=REQUEST_TIMEOUT_S) as client:
        features, responses = run_pipeline(client, model, x_test, batch_size, args.device)
    with torch.no_grad():
        server_predictions = model.classify(torch.from_numpy(features)).argmax(dim=1).numpy()

    feature_error = float(np.max(np.abs(features - torch_features.numpy())))
    agreeing = int(np.sum(server_predictions == torch_predictions))
    agreement = agreeing / len(x_test)
    shape = list(features.shape)
    print(f"\nconv features {shape}: max abs difference from PyTorch {feature_error:.2e}")
    print(f"agreement with PyTorch predictions: {agreeing}/{len(x_test)} ({100 * agreement:.2f}%)")
    print(f"test accuracy, PyTorch:            {100 * np.mean(torch_predictions == y_test):.2f}%")
    print(f"test accuracy, clconv features:    {100 * np.mean(server_predictions == y_test):.2f}%")
    print_timings(responses)

    if agreement < MIN_AGREEMENT:
        print(
            f"FAILED: agreement {100 * agreement:.2f}% is below {100 * MIN_AGREEMENT:.0f}%",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
