"""Memory: a training step leaves nothing behind.

- After `backward()` every buffer an op saved for backward is freed at once, and when the loss
  goes out of scope every intermediate tensor and graph node of the step is freed too, by
  reference counting alone (the graph has no reference cycles): checked with the cyclic
  garbage collector disabled and weak references to everything the step created.
- Resident memory stays flat over many training steps (a short run in CI; the issue's 1,000
  steps of the default MNIST model at batch 64 under `pytest -m slow`).
"""

from __future__ import annotations

import contextlib
import gc
import os
import weakref
from pathlib import Path

import numpy as np
import pytest

import tinygrad_conv
import tinygrad_conv.functional as F
from tinygrad_conv import Tensor, nn
from tinygrad_conv.data import MNIST, DataLoader
from tinygrad_conv.optim import SGD, Adam

from helpers import load_example

# rss_mb() reads /proc, which only Linux has; elsewhere the resident-memory checks are skipped
needs_proc = pytest.mark.skipif(not Path("/proc/self/statm").exists(),
                                reason="reads resident memory from /proc (Linux only)")


def rss_mb() -> float:
    """This process's resident set size now, in MiB (from /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@contextlib.contextmanager
def gc_disabled():
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def small_cnn() -> nn.Sequential:
    """conv + relu + pool + linear: every kind of op a CNN training step records."""
    tinygrad_conv.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 2 * 2, 5),
    )


def graph_of(loss: Tensor) -> tuple[list[Tensor], list]:
    """(every non-leaf tensor, every op node) reachable from loss, through the public
    `grad_fn` and each node's `parents`."""
    tensors, nodes, seen, stack = [], [], set(), [loss]
    while stack:
        t = stack.pop()
        if id(t) in seen or t.grad_fn is None:
            continue
        seen.add(id(t))
        tensors.append(t)
        nodes.append(t.grad_fn)
        stack.extend(t.grad_fn.parents)
    return tensors, nodes


def test_backward_frees_saved_buffers_and_dropping_the_loss_frees_the_whole_step():
    model = small_cnn()
    opt = SGD(model.parameters(), lr=0.1)
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((3, 1, 8, 8)).astype(np.float32))
    y = np.array([0, 3, 4])
    kept = {id(p.data) for p in model.parameters()} | {id(x.data), id(y)}
    with gc_disabled():
        loss = F.cross_entropy(model(x), y)
        tensors, nodes = graph_of(loss)
        assert len(nodes) >= 9, "the step should record every layer's op"
        # the buffers only backward needs: not a parameter, the input, or a live tensor's data
        kept |= {id(t.data) for t in tensors if isinstance(t, Tensor)}
        saved = [v for node in nodes for v in node.saved_values
                 if isinstance(v, np.ndarray) and id(v) not in kept]
        assert saved, "the ops should have saved arrays for backward"
        refs_saved = [weakref.ref(a) for a in saved]
        refs_graph = ([weakref.ref(t) for t in tensors] + [weakref.ref(n) for n in nodes]
                      + [weakref.ref(t.data) for t in tensors if isinstance(t, Tensor)])
        del tensors, nodes, saved

        opt.zero_grad()
        loss.backward()
        alive = [r() for r in refs_saved if r() is not None]
        assert not alive, f"{len(alive)} saved buffers survive backward: " \
            f"{[(a.shape, a.dtype) for a in alive]}"
        opt.step()

        del loss
        alive = [r() for r in refs_graph if r() is not None]
        assert not alive, f"{len(alive)} tensors/nodes of the step survive the loss: " \
            f"{[type(a).__name__ for a in alive]}"
    assert all(p.grad is not None for p in model.parameters())


def test_retained_graph_is_freed_with_its_loss_and_no_grad_records_nothing():
    model = small_cnn()
    x = Tensor(np.random.default_rng(1).standard_normal((2, 1, 8, 8)).astype(np.float32))
    with gc_disabled():
        loss = model(x).sum()
        tensors, nodes = graph_of(loss)
        refs = [weakref.ref(o) for o in (*tensors, *nodes)]
        del tensors, nodes
        loss.backward(retain_graph=True)
        loss.backward()  # the buffers were kept for this second pass
        del loss
        assert all(r() is None for r in refs)

        with tinygrad_conv.no_grad():
            out = model(x)
        assert out.grad_fn is None and not out.requires_grad


def test_a_failing_backward_leaves_no_cycle_behind():
    # an exception raised inside backward holds a traceback whose frames see the graph; once
    # the exception is handled, the graph must still go away by reference counting
    x = Tensor(np.ones((2, 3), np.float32), requires_grad=True)
    with gc_disabled():
        out = (x * 2).sum()
        tensors, nodes = graph_of(out)
        refs = [weakref.ref(o) for o in (*tensors, *nodes)]
        del tensors, nodes
        with pytest.raises(ValueError):
            out.backward(np.ones(3))  # wrong seed shape
        del out
        assert all(r() is None for r in refs)


def _rss_over_steps(model: nn.Module, batches, steps: int, marks: tuple[int, ...]) -> dict:
    """Train `steps` steps (Adam, cross-entropy) cycling over `batches`; RSS after each mark."""
    opt = Adam(model.parameters(), lr=1e-3)
    seen: dict[int, float] = {}
    step = 0
    while step < steps:
        for xb, yb in batches:
            loss = F.cross_entropy(model(Tensor(xb)), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            del loss
            step += 1
            if step in marks:
                seen[step] = rss_mb()
            if step == steps:
                break
    return seen


@needs_proc
def test_resident_memory_stays_flat_over_a_short_training_run():
    example = load_example("mnist")
    tinygrad_conv.manual_seed(0)
    model = example.make_model("small")
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((16, 1, 28, 28)).astype(np.float32),
                rng.integers(0, 10, size=16)) for _ in range(4)]
    rss = _rss_over_steps(model, batches, steps=60, marks=(15, 60))
    print(f"\nsmall model, batch 16: RSS {rss[15]:.1f} MiB after step 15, "
          f"{rss[60]:.1f} MiB after step 60")
    assert rss[60] - rss[15] < 3, rss  # catches a leak of ~70 KB per step


@pytest.mark.slow
@needs_proc
def test_default_mnist_model_memory_is_flat_over_1000_steps():
    """The issue's check: 1,000 steps of the default model at batch 64 on MNIST."""
    example = load_example("mnist")
    tinygrad_conv.manual_seed(1)
    model = example.make_model("classic")
    train = MNIST(example.DEFAULT_DATA_DIR, train=True, download=False)
    loader = DataLoader(train, 64, shuffle=True, seed=1, normalize=example.NORMALIZE)
    rss = _rss_over_steps(model, loader, steps=1000, marks=(100, 1000))
    print(f"\nclassic model, batch 64: RSS {rss[100]:.1f} MiB after step 100, "
          f"{rss[1000]:.1f} MiB after step 1000 (difference {rss[1000] - rss[100]:+.1f} MiB)")
    assert rss[1000] - rss[100] < 20, rss
