"""reference.conv2d_backward takes the walkthrough's steps, each one correlation a debugger can
stop in (`break tinygrad_conv.reference.conv2d_forward`):

- dL/dW = Z' ⊛ A: pad(A), cut to the rows and columns the forward read, correlated with Z' as
  the kernel at stride d and dilation s, the batch summed as the correlation's channels;
- dL/dA = W_180 ⊛ pad(dilate(Z', s), d(k-1)): Z' dilated to the stride-1 output's size (zeros
  after the last jump too), padded by d(k-1), correlated with W turned and filters and
  channels swapped, then cropped.
The values are checked against PyTorch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinygrad_conv import reference as R


@pytest.fixture
def calls(monkeypatch):
    """Every conv2d_forward call conv2d_backward makes: (x, w, stride, padding, dilation)."""
    seen = []
    forward = R.conv2d_forward

    def recording(x, w, b, stride, padding, dilation, groups=1):
        seen.append((np.array(x), np.array(w), stride, padding, dilation))
        return forward(x, w, b, stride, padding, dilation, groups)

    monkeypatch.setattr(R, "conv2d_forward", recording)
    return seen


# H=6, k=3, s=2, p=1: the padded input's last row is never reached by a window
N, C, F, H, W_, K, S, P, D = 2, 3, 4, 6, 7, 3, (2, 2), (1, 1), (1, 2)


def layer(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W_))
    w = rng.standard_normal((F, C, K, K))
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    tz = torch.conv2d(tx, tw, stride=S, padding=P, dilation=D)
    g = rng.standard_normal(tz.shape)
    tz.backward(torch.tensor(g))
    return x, w, g, tx.grad.numpy(), tw.grad.numpy()


def test_dl_dw_is_one_correlation_of_the_read_input_with_z_prime_at_stride_d_dilation_s(calls):
    x, w, g, _, torch_dw = layer()
    _, dw, _ = R.conv2d_backward(x, w, g, S, P, D, need_dx=False, need_dw=True, need_db=False)
    np.testing.assert_allclose(dw, torch_dw, rtol=1e-12, atol=1e-12)
    ((a_read, z_kernel, stride, padding, dilation),) = calls
    oh, ow = g.shape[2:]
    rows, cols = S[0] * (oh - 1) + D[0] * (K - 1) + 1, S[1] * (ow - 1) + D[1] * (K - 1) + 1
    a_pad = np.pad(x, ((0, 0), (0, 0), (P[0], P[0]), (P[1], P[1])))
    assert np.array_equal(a_read, a_pad[:, :, :rows, :cols].transpose(1, 0, 2, 3))
    assert np.array_equal(z_kernel, g.transpose(1, 0, 2, 3))
    assert (stride, padding, dilation) == (D, (0, 0), S)


def test_dl_da_dilates_z_prime_to_the_stride_1_size_and_pads_by_d_times_k_minus_1(calls):
    x, w, g, torch_dx, _ = layer(1)
    dx, _, _ = R.conv2d_backward(x, w, g, S, P, D, need_dx=True, need_dw=False, need_db=False)
    np.testing.assert_allclose(dx, torch_dx, rtol=1e-12, atol=1e-12)
    ((z_pad, w_180, stride, padding, dilation),) = calls
    ext = (D[0] * (K - 1), D[1] * (K - 1))                     # d(k-1) = k_eff - 1
    stride_1 = (H + 2 * P[0] - ext[0], W_ + 2 * P[1] - ext[1])  # the stride-1 output's size
    z_dil = np.zeros((N, F, *stride_1))
    z_dil[:, :, ::S[0], ::S[1]] = g
    assert np.array_equal(z_pad, np.pad(z_dil, ((0, 0), (0, 0), (ext[0],) * 2, (ext[1],) * 2)))
    assert np.array_equal(w_180, np.rot90(w, 2, axes=(2, 3)).transpose(1, 0, 2, 3))
    assert (stride, padding, dilation) == ((1, 1), (0, 0), D)
