"""Weights to PyTorch and back through the safetensors package's own numpy API: our state_dict
is plain contiguous numpy arrays under PyTorch's names (buffers included), so no converter is
needed. The networks are the MNIST example's, built in both frameworks by its make_model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch

import tinygrad_conv
from tinygrad_conv import Tensor, nn
from tinygrad_conv.data import MNIST

from helpers import EXAMPLES, load_example

DATA = EXAMPLES / "data" / "mnist"


@pytest.fixture(scope="module")
def example():
    return load_example("mnist")


@pytest.fixture(scope="module")
def images():
    test = MNIST(DATA, train=False, download=False)
    x = test.images[:200].astype(np.float32)[:, None] / np.float32(255)
    return (x - np.float32(0.1307)) / np.float32(0.3081)


def outputs(model, x: np.ndarray) -> np.ndarray:
    model.eval()
    if isinstance(model, torch.nn.Module):
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()
    with tinygrad_conv.no_grad():
        return model(Tensor(x)).data


def there_and_back(example, kind: str, ours: nn.Module, x: np.ndarray, tmp_path: Path) -> None:
    """ours -> file -> PyTorch (same outputs) -> file -> a fresh model of ours (identical)."""
    to_torch, from_torch = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
    safetensors.numpy.save_file(ours.state_dict(), str(to_torch))
    theirs = example.make_model(kind, torch.nn)
    theirs.load_state_dict(safetensors.torch.load_file(str(to_torch)))      # strict
    expected = outputs(ours, x)
    got = outputs(theirs, x)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert np.array_equal(got.argmax(axis=1), expected.argmax(axis=1))

    safetensors.torch.save_file(theirs.state_dict(), str(from_torch))
    tinygrad_conv.manual_seed(12345)                 # other initial weights, all replaced
    back = example.make_model(kind)
    back.load_state_dict(safetensors.numpy.load_file(str(from_torch)))
    for name, value in ours.state_dict().items():
        assert np.array_equal(back.state_dict()[name], value), name
    assert np.array_equal(outputs(back, x), expected)       # the very same numbers


def test_classic_mnist_net_moves_to_pytorch_and_back(example, images, tmp_path):
    tinygrad_conv.manual_seed(0)
    ours = example.make_model("classic")
    there_and_back(example, "classic", ours, images, tmp_path)


def test_exported_batchnorm_net_with_its_running_statistics_moves_too(example, images,
                                                                      tmp_path):
    # a short run of the example's default model, exported by the example itself
    path = tmp_path / "bn.safetensors"
    args = example.parse_args(["--limit", "192", "--test-limit", "100", "--epochs", "1",
                               "--threads", "2", "--no-progress", "--data-dir", str(DATA),
                               "--export", str(path)])
    example.train(args)
    state = safetensors.numpy.load_file(str(path))
    assert state["1.num_batches_tracked"] == 3 and state["1.num_batches_tracked"].dtype == np.int64
    assert not np.all(state["1.running_mean"] == 0)
    ours = example.make_model("bn")
    ours.load_state_dict(state)
    there_and_back(example, "bn", ours, images, tmp_path)
