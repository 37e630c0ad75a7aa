"""Version counters: every optimizer step and `load_state_dict` changes parameters in place,
and a backward through an op that saved a parameter's old values raises PyTorch's "modified by
an inplace operation" error instead of mixing old activations with new weights. Each scenario
runs in PyTorch too: we raise exactly where it raises, and where it does not, the gradients
agree."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import tinygrad_conv.functional as F
from tinygrad_conv import Tensor, nn, optim

rng = np.random.default_rng(0)
X = rng.standard_normal((5, 4))
W = rng.standard_normal((3, 4))
B = rng.standard_normal(3)
MESSAGE = "one of the variables needed for gradient computation has been modified by an " \
          "inplace operation"


def ours_and_torch(fused: bool):
    """(loss function, [weight, bias]) for ours and for torch: relu(x W^T + b) summed squared,
    written as one linear op (`fused`) or as x @ W.T then + b. x requires grad, as a hidden
    layer's input does."""
    def make(lib, tensor, linear):
        w, b = tensor(W, requires_grad=True), tensor(B, requires_grad=True)
        x = tensor(X, requires_grad=True)  # so dL/dx needs W: the op saves W (as PyTorch)

        def loss():
            z = linear(x, w, b) if fused else x @ w.T + b
            return (z.relu() * z.relu()).sum()
        return loss, [w, b]
    return (make("ours", Tensor, F.linear),
            make("torch", lambda a, **k: torch.tensor(a, **k), torch.nn.functional.linear))


def outcome(fn) -> str:
    try:
        fn()
    except RuntimeError as e:
        found = re.search(r"is at version (\d+); expected version (\d+)", str(e))
        assert MESSAGE in str(e) and found, str(e)
        return f"error: changed {int(found[1]) - int(found[2])} time(s) since saved"
    return "ok"


OPTIMIZERS = {
    "sgd": (lambda p: optim.SGD(p, lr=0.1, momentum=0.9),
            lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
    "adam": (lambda p: optim.Adam(p, lr=0.1), lambda p: torch.optim.Adam(p, lr=0.1)),
}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("fused", [True, False], ids=["linear", "matmul-add"])
@pytest.mark.parametrize("updated", ["weight", "bias", "both"])
def test_step_between_forward_and_backward_raises_where_pytorch_does(optimizer, fused, updated):
    results = []
    for (loss_fn, params), make in zip(ours_and_torch(fused), OPTIMIZERS[optimizer]):
        chosen = {"weight": params[:1], "bias": params[1:], "both": params}[updated]
        opt = make(chosen)
        loss = loss_fn()
        loss.backward(retain_graph=True)
        opt.step()
        results.append((outcome(loss.backward), params))
    (ours, ours_params), (theirs, torch_params) = results
    assert ours == theirs, (ours, theirs)
    assert (ours != "ok") == (updated != "bias")  # the bias is saved by no op
    if ours == "ok":
        for p, t in zip(ours_params, torch_params):
            np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-10)


def test_a_weight_no_formula_uses_may_change_as_in_pytorch():
    # x needs no gradient, so dL/dW = g^T x needs x but nothing needs W: neither library saves W
    for linear, tensor, opt in ((F.linear, Tensor, optim.SGD),
                                (torch.nn.functional.linear, torch.tensor, torch.optim.SGD)):
        w = tensor(W, requires_grad=True)
        loss = linear(tensor(X), w).sum()
        loss.backward(retain_graph=True)
        opt([w], lr=0.1).step()
        assert outcome(loss.backward) == "ok"


@pytest.mark.parametrize("frozen", [False, True])
def test_load_state_dict_between_forward_and_backward_raises_as_in_pytorch(frozen):
    # frozen (requires_grad=False) does not stop the check: backward still reads the saved weight
    ours = nn.Linear(4, 3, dtype=np.float64)
    theirs = torch.nn.Linear(4, 3, dtype=torch.float64)
    for p in (ours.weight, theirs.weight):
        p.requires_grad = not frozen
    state = {"weight": W, "bias": B}
    loss = (ours(Tensor(X, requires_grad=True)) ** 2).sum()
    torch_loss = (theirs(torch.tensor(X, requires_grad=True)) ** 2).sum()
    ours.load_state_dict(state)
    theirs.load_state_dict({k: torch.tensor(v) for k, v in state.items()})
    assert outcome(loss.backward) == outcome(torch_loss.backward) \
        == "error: changed 1 time(s) since saved"


def test_a_fresh_forward_after_the_step_is_fine_and_matches_pytorch():
    (loss_fn, params), (torch_loss_fn, torch_params) = ours_and_torch(fused=True)
    opt, torch_opt = optim.SGD(params, lr=0.1), torch.optim.SGD(torch_params, lr=0.1)
    for _ in range(3):
        for o, lf in ((opt, loss_fn), (torch_opt, torch_loss_fn)):
            o.zero_grad()
            lf().backward()
            o.step()
    for p, t in zip(params, torch_params):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-10)
        assert p._version == t._version == 3


def test_the_error_names_the_op_the_input_and_the_tensor():
    w = Tensor(W, requires_grad=True)
    loss = (Tensor(X) * w[0]).sum() + (w * w).sum()
    loss.backward(retain_graph=True)
    optim.SGD([w], lr=0.1).step()
    with pytest.raises(RuntimeError, match=re.escape(MESSAGE)) as info:
        loss.backward()
    text = str(info.value)
    assert "[float64 tensor of shape (3, 4)], which is input 0 of Mul, is at version 1; " \
           "expected version 0 instead" in text and "optimizer step()" in text
