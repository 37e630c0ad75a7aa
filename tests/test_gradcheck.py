"""gradcheck at kinks: a tie in max_pool (or relu at 0) has no derivative, so a correct backward
is accepted there with a warning that names the kink, a backward that is neither one-sided
derivative fails with a message that names the kink, and a wrong gradient elsewhere still fails
with the plain mismatch message."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import tinygrad_conv.functional as F
from tinygrad_conv import Function, GradcheckError, Tensor, gradcheck
from tinygrad_conv import reference as R
from tinygrad_conv.gradcheck import GradcheckKinkWarning

# 2x2 windows, stride 2: the top-left window's 1, 1 and the bottom-left window's four 3s tie;
# the two right windows have one maximum each
TIED = np.array([[1.0, 1, 0, 2],
                 [0, 0.5, 2.5, 1],
                 [3, 3, 1, 1.5],
                 [3, 3, 0.5, 1]]).reshape(1, 1, 4, 4)


def pool_with_backward(route):
    """A 2x2, stride-2 max pool (reference forward) whose backward is route(grad_out, x)."""

    class Pool(Function):
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return R.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))[0]

        def backward(ctx, grad_out):
            (x,) = ctx.saved_values
            return route(grad_out, x)

    return Pool.apply


def split_ties(grad_out, x):
    """Each window's gradient shared evenly by all its maxima (a plausible but wrong rule)."""
    windows = x.reshape(1, 1, 2, 2, 2, 2).transpose(0, 1, 2, 4, 3, 5)
    winners = windows == windows.max(axis=(4, 5), keepdims=True)
    share = winners * (grad_out[..., None, None] / winners.sum(axis=(4, 5), keepdims=True))
    return share.transpose(0, 1, 2, 4, 3, 5).reshape(x.shape)


def test_correct_max_pool_on_tied_inputs_passes_with_a_warning_naming_the_kink():
    x = Tensor(TIED.copy(), requires_grad=True)
    with pytest.warns(GradcheckKinkWarning, match=r"kink.*index \(0, 0, 0, 0\).*tie"):
        assert gradcheck(lambda t: F.max_pool2d(t, 2), [x])


def test_relu_at_zero_is_a_kink_and_its_zero_gradient_is_accepted():
    x = Tensor(np.array([0.0, 1.5, -0.5]), requires_grad=True)
    with pytest.warns(GradcheckKinkWarning, match=r"1 element\(s\) sit on a kink"):
        assert gradcheck(lambda t: t.relu(), [x])


def test_a_tie_free_input_gives_no_warning():
    x = Tensor(TIED + np.arange(16).reshape(TIED.shape) * 1e-3, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gradcheck(lambda t: F.max_pool2d(t, 2), [x])


def test_splitting_a_tied_gradient_fails_with_the_kink_message():
    """The split matches the central difference of a two-way tie but neither one-sided
    derivative of the four-way one: a kink failure, not a bare mismatch."""
    x = Tensor(TIED.copy(), requires_grad=True)
    with pytest.raises(GradcheckError) as info:
        gradcheck(pool_with_backward(split_ties), [x])
    message = str(info.value)
    assert "sits on a kink" in message and "neither one-sided derivative" in message, message
    assert "mismatch" not in message
    assert gradcheck(pool_with_backward(split_ties), [x], raise_exception=False) is False


def test_a_wrong_gradient_on_a_tied_input_still_fails_with_the_mismatch_message():
    """Twice the right gradient: the tie-free windows show it as a plain mismatch."""
    def doubled(grad_out, x):
        _, argmax = R.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
        return 2 * R.max_pool2d_backward(grad_out, argmax, 4, 4)

    x = Tensor(TIED.copy(), requires_grad=True)
    with pytest.raises(GradcheckError, match=r"gradient mismatch at index \(0, 0, [01], [23]\): "
                                             r"analytic .*numerical"):
        gradcheck(pool_with_backward(doubled), [x])
