"""Keeping the losses (`losses.append(loss)`, the everyday way to plot a curve) costs bytes, not
megabytes: after `backward()` the graph behind a loss holds no batch, no dropout mask, no
saved activation, only op nodes with shapes and dtypes (PyTorch stays flat the same way)."""

from __future__ import annotations

import gc

import numpy as np
from test_memory import rss_mb

import tinygrad_conv
import tinygrad_conv.functional as F
from tinygrad_conv import Tensor, nn
from tinygrad_conv.autograd import GraphNode
from tinygrad_conv.optim import SGD
from tinygrad_conv.tensor import Function


def mlp() -> nn.Module:
    tinygrad_conv.manual_seed(0)
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, 10))


def batch(rng: np.random.Generator) -> tuple[Tensor, np.ndarray]:
    return Tensor(rng.standard_normal((64, 784)).astype(np.float32)), rng.integers(0, 10, 64)


def array_bytes_behind(loss: Tensor, exclude: set[int]) -> int:
    """Bytes of every numpy array the graph behind `loss` keeps alive (through ops, nodes,
    tensors, their saved values, and views' bases), leaving out the arrays in `exclude` (the
    parameters' values and gradients, which the model holds anyway)."""
    seen, total, stack = set(), 0, [loss]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type):
            continue
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            if obj.base is not None:
                stack.append(obj.base)
            elif id(obj) not in exclude:
                total += obj.nbytes
            continue
        if isinstance(obj, (Tensor, GraphNode, Function, tuple, list, dict)):
            stack.extend(gc.get_referents(obj))
    return total


def test_the_graph_of_a_loss_keeps_no_array_after_backward():
    model, rng = mlp(), np.random.default_rng(0)
    weights = {id(p.data) for p in model.parameters()}
    x, y = batch(rng)
    loss = F.cross_entropy(model(x), y)
    before = array_bytes_behind(loss, weights)
    assert before > x.data.nbytes  # the saved activations and the mask, while they are needed
    loss.backward()
    del x  # the user lets go of the batch, as a training loop does
    weights |= {id(p.grad) for p in model.parameters()}  # the model's own, not the graph's
    assert array_bytes_behind(loss, weights) < 64, "the graph still holds arrays"
    assert loss.grad_fn is not None  # the graph itself (ops, shapes) is still there


def test_resident_memory_stays_flat_while_every_loss_is_kept():
    model, rng = mlp(), np.random.default_rng(1)
    opt = SGD(model.parameters(), lr=0.01)
    losses, rss = [], {}
    for step in range(1, 121):
        x, y = batch(rng)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss)
        if step in (20, 120):
            gc.collect()
            rss[step] = rss_mb()
    # before the fix each kept loss held its batch (200 KB), mask and activations: > 40 MiB
    assert rss[120] - rss[20] < 6, rss
    assert all(np.isfinite(loss.item()) for loss in losses)
