"""PyTorch as the oracle: run the same expression in torch and in tinygrad_conv and compare."""

from __future__ import annotations

import numpy as np
import torch

from tinygrad_conv import Tensor, gradcheck

from helpers import assert_close

torch.set_num_threads(2)


def helper_test_op(shapes, torch_fn, our_fn, *, dtype=np.float64, rtol=1e-10, low=-2.0,
                   high=2.0, seed=0, check_grad=True, grad_check=True):
    """Compare forward values and every input's gradient with PyTorch; then gradcheck ours.

    Inputs are uniform in [low, high); the upstream gradient is random, so each input's whole
    vector-Jacobian product is compared, not just the gradient of a sum.
    """
    rng = np.random.default_rng(seed)
    arrays = [rng.uniform(low, high, size=s).astype(dtype) for s in shapes]
    theirs = [torch.tensor(a, requires_grad=check_grad) for a in arrays]
    ours = [Tensor(a, dtype=dtype, requires_grad=check_grad) for a in arrays]
    t_out, o_out = torch_fn(*theirs), our_fn(*ours)
    assert o_out.dtype == dtype, f"output dtype {o_out.dtype}, expected {np.dtype(dtype)}"
    # inputs are O(1): a value that should be 0 carries rounding at scale 1 (atol)
    assert_close(o_out.data, t_out, rtol, "forward", atol=rtol)
    if not check_grad:
        return
    upstream = rng.standard_normal(t_out.shape).astype(dtype)
    t_out.backward(torch.tensor(upstream))
    o_out.backward(upstream)
    for i, (t, o) in enumerate(zip(theirs, ours)):
        assert o.grad is not None, f"input {i} got no gradient"
        assert o.grad.dtype == dtype
        assert_close(o.grad, t.grad, rtol, f"grad of input {i}", atol=rtol)
    if grad_check and dtype == np.float64:
        fresh = [Tensor(a, dtype=np.float64, requires_grad=True) for a in arrays]
        assert gradcheck(our_fn, fresh, atol=1e-6, rtol=1e-4)
