"""Bad arguments get an error that names the op and the argument (or work as in PyTorch), never
an AttributeError from deep inside, a silently wrong number or a misleading message."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from tinygrad_conv import Tensor, data, nn, optim
from tinygrad_conv import functional as F


def logits() -> Tensor:
    return Tensor(np.zeros((2, 3), np.float32))


@pytest.mark.parametrize("call, message", [
    (lambda: F.cross_entropy(np.zeros((2, 3)), np.array([0, 1])),
     "cross_entropy: input must be a Tensor, got ndarray"),
    (lambda: F.nll_loss(np.zeros((2, 3)), np.array([0, 1])),
     "nll_loss: input must be a Tensor, got ndarray"),
    (lambda: F.linear(np.zeros((2, 3)), Tensor(np.zeros((4, 3)))),
     "linear: input must be a Tensor, got ndarray"),
    (lambda: F.linear(logits(), np.zeros((4, 3))), "linear: weight must be a Tensor, got ndarray"),
    (lambda: F.linear(logits(), Tensor(np.zeros((4, 3))), np.zeros(4)),
     "linear: bias must be a Tensor, got ndarray"),
    (lambda: F.dropout(logits(), p=None), "dropout: p must be a real number in [0, 1], got None"),
    (lambda: F.dropout(logits(), p="0.5"), "dropout: p must be a real number"),
    (lambda: F.dropout(np.ones(3), p=0.5), "dropout: input must be a Tensor, got ndarray"),
    (lambda: F.dropout(Tensor([1, 2]), p=0.5), "dropout: input must be float32 or float64, got "
                                               "int64"),
    (lambda: optim.Adam([Tensor(np.ones(2), requires_grad=True)], betas=0.9),
     "Adam: betas must be a pair (beta1, beta2), got 0.9"),
], ids=["cross_entropy-ndarray", "nll_loss-ndarray", "linear-input", "linear-weight",
        "linear-bias", "dropout-p-None", "dropout-p-str", "dropout-ndarray", "dropout-int",
        "adam-betas-float"])
def test_bad_argument_is_a_type_error_naming_op_and_argument(call, message):
    with pytest.raises(TypeError) as info:
        call()
    assert message in str(info.value)


class Digits:
    def __init__(self, labels=None):
        self.images = np.zeros((4, 2, 2), np.uint8)
        self.labels = np.arange(4) if labels is None else labels


@pytest.mark.parametrize("normalize, error", [
    (0.5, TypeError), ("ab", TypeError), ((0.1, None), TypeError), ((0.1, float("nan")),
                                                                      ValueError),
])
def test_loader_normalize_must_be_a_pair_of_numbers(normalize, error):
    with pytest.raises(error, match="DataLoader: normalize must be"):
        data.DataLoader(Digits(), 2, normalize=normalize)


def test_loader_refuses_float_labels_instead_of_truncating_them():
    with pytest.raises(TypeError, match="DataLoader: dataset.labels must be integer class "
                                        "indices, got dtype float64"):
        data.DataLoader(Digits(np.array([0.5, 1.7, 2.0, 3.0])), 2)


@pytest.mark.parametrize("epoch, start_batch, name", [(1.7, 0, "epoch"), (1, 0.5, "start_batch"),
                                                      (True, 0, "epoch")])
def test_set_epoch_refuses_non_integers_instead_of_truncating(epoch, start_batch, name):
    loader = data.DataLoader(Digits(), 2)
    with pytest.raises(TypeError, match=f"DataLoader.set_epoch: {name} must be an int"):
        loader.set_epoch(epoch, start_batch)
    assert loader.epoch == 0
    loader.set_epoch(np.int64(1), np.int64(1))
    assert loader.epoch == 1 and len(list(loader)) == 1


@pytest.mark.parametrize("ndim", [65, 255])
def test_read_idx_with_more_dimensions_than_numpy_has_names_the_file(tmp_path, ndim):
    path = tmp_path / "many.idx"
    path.write_bytes(bytes([0, 0, 8, ndim]) + struct.pack(f">{ndim}i", *[1] * ndim) + b"\x07")
    with pytest.raises(ValueError, match=f"read_idx: .*many.idx.* declares {ndim} dimensions, "
                                         "expected 1 to 64"):
        data.read_idx(path)


@pytest.mark.parametrize("method", ["sum", "mean", "max"])
@pytest.mark.parametrize("dim", [0, -1, (0,), ()])
@pytest.mark.parametrize("keepdim", [False, True])
def test_reducing_a_0d_tensor_over_its_dim_0_works_as_in_pytorch(method, dim, keepdim):
    import torch

    ours = getattr(Tensor(3.5, requires_grad=True), method)(dim=dim, keepdim=keepdim)
    theirs = getattr(torch.tensor(3.5), method)
    theirs = torch.amax(torch.tensor(3.5), dim=dim, keepdim=keepdim) if method == "max" \
        else theirs(dim=dim, keepdim=keepdim)
    assert ours.shape == tuple(theirs.shape) and ours.item() == theirs.item()
    ours.backward()


@pytest.mark.parametrize("method", ["sum", "mean", "max"])
def test_an_empty_dim_tuple_reduces_every_axis_as_in_pytorch(method):
    import torch

    data = np.arange(6.0).reshape(2, 3)
    for keepdim in (False, True):
        ours = getattr(Tensor(data), method)(dim=(), keepdim=keepdim)
        theirs = torch.amax(torch.tensor(data), dim=(), keepdim=keepdim) if method == "max" \
            else getattr(torch.tensor(data), method)(dim=(), keepdim=keepdim)
        assert ours.shape == tuple(theirs.shape)
        np.testing.assert_allclose(ours.data, theirs.numpy())


def test_np_asarray_of_a_tensor_is_its_values_not_an_object_array():
    t = Tensor([[1.0, 2.0], [3.0, 4.0]])
    array = np.asarray(t)
    assert array.dtype == np.float32 and array.shape == (2, 2) and array is t.data
    assert np.asarray(t, dtype=np.float64).dtype == np.float64
    assert np.array(t) is not t.data and np.array_equal(np.array(t), t.data)  # a copy
    assert np.asarray([Tensor(1.0), Tensor(2.0)]).tolist() == [1.0, 2.0]


def _t(*shape, dtype=np.float32) -> Tensor:
    return Tensor(np.zeros(shape, dtype))


@pytest.mark.parametrize("call, error, message", [
    (lambda: F.conv2d(_t(2, 3, 8, 8), _t(4, 3, 3, 3), groups=0), ValueError,
     "conv2d: groups must be >= 1, got 0"),
    (lambda: F.conv2d(_t(2, 3, 8, 8), _t(4, 3, 3, 3), groups=1.0), TypeError,
     "conv2d: groups must be an int, got 1.0"),
    (lambda: F.conv2d(_t(2, 3, 8, 8), _t(4, 3, 3, 3), groups=2**40), ValueError,
     "conv2d: groups must be at most 2147483647, got 1099511627776"),
    (lambda: F.avg_pool2d(_t(1, 1, 4, 4), 2, ceil_mode=1), TypeError,
     "avg_pool2d: ceil_mode must be a bool, got 1"),
    (lambda: F.batch_norm(_t(2, 3), None, None, momentum=2), ValueError,
     "batch_norm: momentum must be in [0, 1], got 2.0"),
    (lambda: F.batch_norm(_t(2, 3), None, None, eps="x"), TypeError,
     "batch_norm: eps must be a real number >= 0, got 'x'"),
    (lambda: nn.BatchNorm2d(3, momentum=2), ValueError,
     "BatchNorm2d: momentum (a number or None) must be in [0, 1], got 2.0"),
    (lambda: nn.Flatten(1.5), TypeError, "Flatten: start_dim must be an int, got 1.5"),
    (lambda: optim.Adam([Tensor(np.ones(2), requires_grad=True)], betas=(1.0, 0.9)),
     ValueError, "Adam: betas[0] must be in [0.0, 1.0), got 1.0"),
    (lambda: optim.lr_scheduler.StepLR(optim.SGD([Tensor(np.ones(2), requires_grad=True)],
                                                 lr=0.1), step_size=0),
     ValueError, "StepLR: step_size must be >= 1, got 0"),
], ids=["conv-groups-0", "conv-groups-float", "conv-groups-huge", "avg-pool-ceil-mode",
        "batch-norm-momentum", "batch-norm-eps-str", "BatchNorm2d-momentum", "Flatten-float",
        "Adam-betas", "StepLR-step-size"])
def test_the_shared_checkers_name_the_op_the_argument_and_the_bound(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert message in str(info.value)


@pytest.mark.parametrize("input", [np.ones(3), Tensor(np.arange(3))], ids=["array", "int64"])
def test_mse_loss_input_must_be_a_float_tensor_naming_mse_loss(input):
    # an array used to go through as numpy arithmetic and return an array, silently
    with pytest.raises(TypeError, match=r"mse_loss: input must be"):
        F.mse_loss(input, np.ones(3))


def test_a_reductions_0d_result_is_a_float_tensor_to_the_checkers():
    # a sum's 0-d result holds a numpy scalar, not an array: still a float tensor
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    loss = F.mse_loss(F.dropout(x.sum(), 0.0), 1.0)
    loss.backward()
    assert float(loss.data) == 4.0 and x.grad.tolist() == [4.0, 4.0]
