"""detect_anomaly: the first op to produce a NaN or Inf names itself; outside it nothing happens."""

import inspect

import numpy as np
import pytest

import tinygrad_conv.functional as F
from tinygrad_conv import Tensor, detect_anomaly

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def test_forward_nan_names_the_op_shapes_pass_and_user_line():
    x = Tensor([[1.0, -1.0]], requires_grad=True)
    with detect_anomaly(), pytest.raises(RuntimeError) as info:
        line = inspect.currentframe().f_lineno + 1
        x.log()
    message = str(info.value)
    assert "Log produced NaN in its forward" in message
    assert "(1, 2)" in message
    assert f"test_anomaly.py:{line}" in message


def test_backward_inf_names_the_op_that_produced_it_and_where_it_was_created():
    x = Tensor([0.0, 4.0], requires_grad=True)
    with detect_anomaly():
        line = inspect.currentframe().f_lineno + 1
        y = x ** 0.5  # finite forward, but d/dx sqrt(x) at 0 is Inf
        loss = y.sum()
        with pytest.raises(RuntimeError) as info:
            loss.backward()
    message = str(info.value)
    assert "Pow produced Inf in its backward" in message
    assert f"test_anomaly.py:{line}" in message


def test_anomaly_in_a_conv_network_names_the_conv_op():
    x = Tensor(np.ones((1, 1, 4, 4)))
    w = Tensor(np.full((1, 1, 3, 3), np.inf), requires_grad=True)
    with detect_anomaly(), pytest.raises(RuntimeError, match=r"Conv2d produced .*\(1, 1, 4, 4\)"):
        F.conv2d(x, w)


def test_without_anomaly_mode_nans_flow_silently_like_torch():
    x = Tensor([1.0, -1.0], requires_grad=True)
    y = x.log()
    y.sum().backward()
    assert np.isnan(y.data[1])


def test_anomaly_mode_is_restored_after_the_block_and_works_as_decorator():
    @detect_anomaly()
    def bad(t):
        return t.log()

    with pytest.raises(RuntimeError, match="Log"):
        bad(Tensor([-1.0]))
    Tensor([-1.0]).log()  # no error outside
