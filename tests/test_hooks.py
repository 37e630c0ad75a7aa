"""Seeing every gradient: retain_grad, register_hook, is_leaf and retains_grad against PyTorch,
on graphs with branches and reuse; and what the graph says about an intermediate it freed."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

import tinygrad_conv.functional as F
from tinygrad_conv import Tensor, no_grad

rng = np.random.default_rng(0)


def branchy(lib_exp, x, w):
    """a used three times, b on two branches; every intermediate returned by name."""
    a = x * w
    b = lib_exp(a)
    c = a * b + a
    d = c * a
    return {"a": a, "b": b, "c": c, "d": d}, d.sum()


def cnn(x, w, v, conv, pool, log_softmax):
    """conv -> relu -> max-pool -> flatten -> linear -> log-softmax, the loss of a small CNN."""
    z = conv(x, w)
    a = z.relu()
    p = pool(a)
    h = p.reshape(p.shape[0], -1)
    logits = h @ v
    nll = -log_softmax(logits)[:, 0]
    return {"z": z, "a": a, "p": p, "h": h, "logits": logits, "nll": nll}, nll.sum()


def both(build, arrays):
    """build(ours...) and build(theirs...) with retain_grad on every intermediate; backward."""
    ours = [Tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    results = []
    for side, inputs in (("ours", ours), ("torch", theirs)):
        named, loss = build(side, *inputs)
        for t in named.values():
            t.retain_grad()
        loss.retain_grad()
        loss.backward()
        results.append((named, loss, inputs))
    return results


def assert_same_grads(ours_named, theirs_named):
    for name in theirs_named:
        want = theirs_named[name].grad.numpy()
        got = ours_named[name].grad
        assert got is not None, f"{name}: no retained gradient"
        assert got.dtype == np.float64 and got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=name)


def build_branchy(side, x, w):
    return branchy(Tensor.exp if side == "ours" else torch.exp, x, w)


def build_cnn(side, x, w, v):
    if side == "ours":
        return cnn(x, w, v, F.conv2d, lambda t: F.max_pool2d(t, 2), F.log_softmax)
    return cnn(x, w, v, torch.nn.functional.conv2d,
               lambda t: torch.nn.functional.max_pool2d(t, 2),
               lambda t: torch.log_softmax(t, dim=1))


# -- retain_grad -------------------------------------------------------------------------------


def test_retained_gradients_of_a_branchy_graph_with_reuse_match_torch():
    (ours, o_loss, o_in), (theirs, t_loss, t_in) = both(
        build_branchy, [rng.standard_normal(5), rng.standard_normal(5)])
    assert_same_grads(ours, theirs)
    assert o_loss.grad == t_loss.grad.item() == 1.0
    for o, t in zip(o_in, t_in):
        np.testing.assert_allclose(o.grad, t.grad.numpy(), rtol=1e-12)


def test_retained_gradients_of_every_layer_of_a_cnn_match_torch():
    arrays = [rng.standard_normal((2, 1, 6, 6)), rng.standard_normal((3, 1, 3, 3)),
              rng.standard_normal((12, 4))]
    (ours, _, o_in), (theirs, _, t_in) = both(build_cnn, arrays)
    assert_same_grads(ours, theirs)
    for o, t in zip(o_in, t_in):
        np.testing.assert_allclose(o.grad, t.grad.numpy(), rtol=1e-12)


def test_retained_gradient_adds_up_over_two_backwards_like_torch():
    def run(t, exp):
        a = t * 3
        a.retain_grad()
        loss = (exp(a) * a).sum()
        loss.backward(retain_graph=True)
        first = a.grad.clone() if isinstance(a, torch.Tensor) else a.grad.copy()
        loss.backward()
        return first, a.grad

    values = rng.standard_normal(4)
    ours = run(Tensor(values, requires_grad=True), Tensor.exp)
    theirs = run(torch.tensor(values, requires_grad=True), torch.exp)
    np.testing.assert_allclose(ours[0], theirs[0].numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours[1], theirs[1].numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours[1], 2 * ours[0], rtol=1e-15)


def test_retain_grad_on_the_tensor_backward_starts_from_holds_the_seed():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    y.retain_grad()
    y.backward(np.array([3.0, -1.0]))
    np.testing.assert_array_equal(y.grad, [3.0, -1.0])
    np.testing.assert_array_equal(x.grad, [6.0, -2.0])


def test_without_retain_grad_an_intermediate_keeps_no_gradient():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    (y * y).sum().backward()
    assert y.grad is None and not y.retains_grad


def test_a_retained_gradient_is_its_own_array():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = x + 0.0   # Add's backward hands the same array on to x
    y.retain_grad()
    y.sum().backward()
    y.grad[:] = 7.0
    np.testing.assert_array_equal(x.grad, [1.0, 1.0])


# -- is_leaf and retains_grad -----------------------------------------------------------------


def flags(t):
    return t.is_leaf, t.retains_grad, t.requires_grad


def test_is_leaf_and_retains_grad_agree_with_torch_for_every_kind_of_tensor():
    def kinds(make, no_grad_block):
        x = make(True)
        y = x * 2
        r = x * 3
        r.retain_grad()
        x.retain_grad()                      # on a leaf: changes nothing
        with no_grad_block():
            n = x * 2
        return {"leaf requiring grad": x, "leaf not requiring grad": make(False),
                "op result": y, "retained op result": r, "made under no_grad": n,
                "detached": y.detach()}

    values = np.ones(3)
    ours = kinds(lambda g: Tensor(values, requires_grad=g), no_grad)
    theirs = kinds(lambda g: torch.tensor(values, requires_grad=g), torch.no_grad)
    for name in theirs:
        assert flags(ours[name]) == flags(theirs[name]), name


@pytest.mark.parametrize("call", ["retain_grad", "register_hook"])
def test_asking_for_the_gradient_of_a_tensor_that_gets_none_is_a_runtime_error(call):
    t = Tensor([1.0, 2.0])
    args = (lambda g: g,) if call == "register_hook" else ()
    with pytest.raises(RuntimeError, match=rf"{call}: .*\(2,\)\) does not require grad"):
        getattr(t, call)(*args)
    with pytest.raises(RuntimeError):
        getattr(torch.tensor([1.0, 2.0]), call)(*args)   # PyTorch refuses it too


# -- register_hook -----------------------------------------------------------------------------


def test_hooks_see_the_same_gradients_as_torchs_on_a_branchy_graph():
    def run(lib, exp):
        seen = {}
        x = lib(rng_values[0])
        w = lib(rng_values[1])
        named, loss = branchy(exp, x, w)
        def recorder(name):
            def hook(g):
                assert name not in seen, f"the hook of {name} ran twice"
                seen[name] = g.numpy().copy() if isinstance(g, torch.Tensor) else g.copy()
            return hook

        for name, t in {**named, "x": x, "loss": loss}.items():
            t.register_hook(recorder(name))
        loss.backward()
        return seen

    rng_values = [rng.standard_normal(4), rng.standard_normal(4)]
    ours = run(lambda v: Tensor(v, requires_grad=True), Tensor.exp)
    theirs = run(lambda v: torch.tensor(v, requires_grad=True), torch.exp)
    assert ours.keys() == theirs.keys() == {"a", "b", "c", "d", "x", "loss"}
    for name in theirs:   # each hook ran once, with the sum over every use of its tensor
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-12, err_msg=name)


def test_a_hook_that_returns_a_new_gradient_changes_everything_upstream_like_torch():
    def run(t, exp):
        a = t * t
        a.register_hook(lambda g: g * 10)       # on an intermediate used twice
        b = exp(a)
        loss = (b * a).sum() + a.sum()
        t.register_hook(lambda g: g - 1)         # on the leaf: changes what .grad receives
        loss.backward()
        return t.grad

    values = rng.standard_normal(3)
    ours = run(Tensor(values, requires_grad=True), Tensor.exp)
    theirs = run(torch.tensor(values, requires_grad=True), torch.exp)
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-12)


def test_hooks_run_in_order_and_retain_grad_stores_what_the_last_returned_like_torch():
    def run(t):
        y = t * 2
        y.retain_grad()                          # registered first, still stores the final one
        y.register_hook(lambda g: g + 1)
        y.register_hook(lambda g: g * 3)
        y.register_hook(lambda g: None)          # None: the gradient goes on unchanged
        y.sum().backward()
        return y.grad, t.grad

    ours = run(Tensor([1.0, 2.0], requires_grad=True))
    theirs = run(torch.tensor([1.0, 2.0], requires_grad=True))
    for o, t in zip(ours, theirs):
        np.testing.assert_array_equal(o, t.numpy())
    np.testing.assert_array_equal(ours[0], [6.0, 6.0])


def test_a_removed_hook_no_longer_runs():
    x = Tensor([1.0, 2.0], requires_grad=True)
    calls = []
    handle = x.register_hook(lambda g: calls.append(1) or g * 0)
    handle.remove()
    handle.remove()                              # twice is harmless, as in PyTorch
    (x * 3).sum().backward()
    assert calls == [] and np.array_equal(x.grad, [3.0, 3.0])


def test_a_hook_cannot_edit_the_gradient_in_place():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = x * 2

    def edit(g):
        g *= 0

    y.register_hook(edit)
    with pytest.raises(ValueError, match="read-only"):
        y.sum().backward()


@pytest.mark.parametrize("returned, error, words", [
    (lambda g: g[:1], ValueError, ["hook", "shape (1,)", "(2,)"]),
    (lambda g: g.astype(np.float64), TypeError, ["hook", "float64", "must be float32"]),
    (lambda g: g.astype(np.int64), TypeError, ["hook", "int64"]),
    (lambda g: Tensor(g), TypeError, ["hook", "Tensor", ".data"]),
    (lambda g: list(g), TypeError, ["hook", "list"]),
])
def test_a_hook_returning_a_wrong_gradient_is_an_error_naming_the_hook(returned, error, words):
    x = Tensor(np.ones(2, np.float32), requires_grad=True)
    y = x * 2
    y.register_hook(returned)
    with pytest.raises(error) as info:
        y.sum().backward()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_register_hook_needs_a_callable():
    with pytest.raises(TypeError, match="register_hook: hook must be callable, got int"):
        Tensor([1.0], requires_grad=True).register_hook(3)


# -- what the graph keeps of an intermediate ---------------------------------------------------


def test_walking_the_graph_shows_an_intermediates_values_while_its_tensor_lives():
    x = Tensor([1.0, -2.0], requires_grad=True)
    h = x.relu()
    loss = (h * 3).sum()
    node = loss.grad_fn.parents[0].grad_fn.parents[0]       # Sum <- Mul <- h
    assert node.grad_fn is h.grad_fn and node.shape == h.shape
    np.testing.assert_array_equal(node.data, [1.0, 0.0])


def test_a_freed_intermediates_values_raise_an_error_naming_its_op_and_the_way_to_keep_them():
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    loss = (x.exp() * 3).sum()                               # exp's output: dropped at once
    gc.collect()
    node = loss.grad_fn.parents[0].grad_fn.parents[0]
    with pytest.raises(RuntimeError) as info:
        _ = node.data
    message = str(info.value)
    for words in ["Exp output", "(2, 3)", "float64", "freed", "keep a reference",
                  "retain_grad"]:
        assert words in message, (words, message)


def test_a_retained_intermediate_shows_its_gradient_on_the_graph_too():
    x = Tensor([1.0, 2.0], requires_grad=True)
    h = x * x
    h.retain_grad()
    loss = (h * 5).sum()
    loss.backward()
    node = loss.grad_fn.parents[0].grad_fn.parents[0]
    np.testing.assert_array_equal(node.grad, [5.0, 5.0])
    assert node.grad is h.grad
