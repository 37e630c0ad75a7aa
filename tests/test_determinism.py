"""Determinism: the same seed gives bit-identical training on the same number of threads, and
1 and 2 threads agree to float32 rounding.

A few SGD steps of a small CNN (conv + relu + max-pool + conv + linear, cross-entropy), with
the initial weights, the data order and dropout all drawn from the seeded generators.
"""

from __future__ import annotations

import numpy as np
import pytest

import tinygrad_conv
import tinygrad_conv.functional as F
from tinygrad_conv import Tensor, nn
from tinygrad_conv.data import DataLoader
from tinygrad_conv.optim import SGD

from helpers import assert_close

STEPS = 6


class Digits:
    """A small synthetic dataset in DataLoader's format (uint8 images, int64 labels)."""

    def __init__(self, n: int = 96) -> None:
        rng = np.random.default_rng(1234)
        self.images = rng.integers(0, 256, size=(n, 12, 12), dtype=np.uint8)
        self.labels = rng.integers(0, 10, size=n).astype(np.int64)


def train(seed: int, threads: int) -> tuple[list[float], dict[str, np.ndarray]]:
    """(the losses, the final weights) of STEPS SGD steps from `seed` on `threads` threads."""
    previous = tinygrad_conv.get_num_threads()
    tinygrad_conv.set_num_threads(threads)
    try:
        tinygrad_conv.manual_seed(seed)
        model = nn.Sequential(
            nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 12 -> 6
            nn.Conv2d(6, 8, 3), nn.ReLU(), nn.Dropout(0.25),            # 6 -> 4
            nn.Flatten(), nn.Linear(8 * 4 * 4, 10),
        )
        opt = SGD(model.parameters(), lr=0.05, momentum=0.9)
        loader = DataLoader(Digits(), 16, shuffle=True, seed=seed, normalize=(0.5, 0.25))
        losses = []
        for x, y in loader:
            loss = F.cross_entropy(model(Tensor(x)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if len(losses) == STEPS:
                break
        return losses, dict(model.state_dict())
    finally:
        tinygrad_conv.set_num_threads(previous)


@pytest.mark.parametrize("threads", [1, 2])
def test_same_seed_same_threads_trains_bit_identically(threads):
    losses_a, weights_a = train(seed=7, threads=threads)
    losses_b, weights_b = train(seed=7, threads=threads)
    assert losses_a == losses_b
    for name, w in weights_a.items():
        assert w.tobytes() == weights_b[name].tobytes(), f"{name} differs between two runs"


def test_different_seeds_train_differently():
    # guards the test above against a training that ignores its seed
    losses_a, _ = train(seed=7, threads=1)
    losses_b, _ = train(seed=8, threads=1)
    assert losses_a != losses_b


def test_one_and_two_threads_agree_to_float32_rounding():
    if tinygrad_conv.get_num_threads() == 1 and not _threads_can_change():
        pytest.skip("built without OpenMP: the kernels always use one thread")
    losses_1, weights_1 = train(seed=7, threads=1)
    losses_2, weights_2 = train(seed=7, threads=2)
    # the threads may split and sum the work in another order: rounding-level differences only,
    # after STEPS steps of momentum SGD
    np.testing.assert_allclose(losses_1, losses_2, rtol=1e-5)
    for name, w in weights_1.items():
        assert_close(weights_2[name], w, 1e-5, name)


def _threads_can_change() -> bool:
    previous = tinygrad_conv.get_num_threads()
    tinygrad_conv.set_num_threads(2)
    changed = tinygrad_conv.get_num_threads() == 2
    tinygrad_conv.set_num_threads(previous)
    return changed
