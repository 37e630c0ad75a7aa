"""Dtype edges: what happens to float16 and integer data, and to mixed float32/float64 operands.

The rules pinned here:
- `Tensor(data)` follows PyTorch's rule (`torch.tensor`): numpy float arrays and scalars keep
  their width (float64 stays float64), Python floats and lists of them become float32, a list
  holding numpy float64 values becomes float64, integers become int64 and bools bool. Where
  PyTorch keeps a dtype a Tensor cannot hold, we take the nearest one that holds every value
  exactly: float16 becomes float32, int8/int32/uint8 int64.
- `dtype=` may ask for float32, float64, int64 or bool only, anything else (float16) is a
  TypeError.
- conv2d and max_pool2d take float32 or float64 only: an integer tensor, or an array of another
  float width put into `.data` by hand, is refused with a TypeError that says how to convert.
  conv2d's input, weight and bias must share one dtype (a TypeError otherwise).
- Elsewhere float32 and float64 operands mix by numpy's promotion (float64 wins), as in
  PyTorch, and each input's gradient comes back in that input's own dtype.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tinygrad_conv.functional as F
from tinygrad_conv import Tensor
from tinygrad_conv.data import MNIST, DataLoader

from helpers import load_example

rng = np.random.default_rng(0)


# ---- conversion on the way in: PyTorch's rule --------------------------------------------------

# every kind of data a Tensor is made from, with torch.tensor's dtype for it where we hold that
# dtype; the others map to the nearest dtype we hold that keeps every value exactly
NEAREST_WE_HOLD = {torch.float16: np.float32, torch.int8: np.int64, torch.int32: np.int64,
                   torch.uint8: np.int64}
INPUT_KINDS = {
    "python float": 1.5,
    "python int": 3,
    "python bool": True,
    "list of floats": [1.0, 2.5],
    "list of ints": [1, 2],
    "list of ints and floats": [1, 2.5],
    "nested list": [[1, 2], [3.0, 4.0]],
    "tuple of floats": (1.0, 2.0),
    "list of bools": [True, False],
    "list of numpy float64 scalars": [np.float64(1.0), np.float64(2.0)],
    "list of numpy float32 scalars": [np.float32(1.0), np.float32(2.0)],
    "list mixing numpy float64 and python floats": [np.float64(1.0), 2.0],
    "list of numpy float64 arrays": [np.zeros(2), np.ones(2)],
    "numpy float64 array": np.array([0.5, -1.25]),
    "numpy float32 array": np.array([0.5, -1.25], np.float32),
    "numpy float16 array": np.array([0.5, -1.25], np.float16),
    "numpy 0-d float64 array": np.array(1.5),
    "numpy float64 scalar": np.float64(1.5),
    "numpy float32 scalar": np.float32(1.5),
    "numpy int64 array": np.array([1, 2]),
    "numpy int32 array": np.array([1, 2], np.int32),
    "numpy int8 array": np.array([1, -2], np.int8),
    "numpy uint8 array": np.array([1, 200], np.uint8),
    "numpy int32 scalar": np.int32(7),
    "numpy bool array": np.array([True, False]),
}


@pytest.mark.filterwarnings("ignore:Creating a tensor from a list of numpy.ndarrays")
@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_tensor_of_any_input_kind_takes_torch_tensors_dtype(kind):
    data = INPUT_KINDS[kind]
    theirs = torch.tensor(data)
    want = NEAREST_WE_HOLD.get(theirs.dtype, theirs.numpy().dtype)
    ours = Tensor(data)
    assert ours.dtype == want, f"{kind}: ours {ours.dtype}, torch {theirs.dtype}"
    np.testing.assert_array_equal(ours.data, theirs.numpy().astype(want))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_tensor_made_from_a_tensor_keeps_its_dtype(dtype):
    assert Tensor(Tensor(np.ones(3), dtype=dtype)).dtype == dtype


def test_float64_numpy_data_stays_float64_through_a_gradient_check():
    # the point of the rule: a float64 gradient check needs no dtype= anywhere
    x = Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    y = (x * x).sum()
    y.backward()
    assert x.dtype == y.dtype == x.grad.dtype == np.float64


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32, np.int64])
def test_integer_data_becomes_int64(dtype):
    assert Tensor(np.ones(3, dtype=dtype)).dtype == np.int64


def test_bool_data_stays_bool_as_in_pytorch():
    assert Tensor(np.ones(3, dtype=np.bool_)).dtype == np.bool_
    assert Tensor([True, False]).dtype == np.bool_


@pytest.mark.parametrize("dtype", [np.float16, np.int32, "complex64"])
def test_asking_for_an_unsupported_dtype_is_a_type_error_naming_it(dtype):
    with pytest.raises(TypeError, match=str(np.dtype(dtype))):
        Tensor([1.0, 2.0], dtype=dtype)


def test_integer_tensor_cannot_require_grad():
    with pytest.raises(TypeError, match="int64"):
        Tensor([1, 2, 3], requires_grad=True)


# ---- the kernels: float32 and float64 only -----------------------------------------------------

def _image(dtype=np.float32) -> Tensor:
    return Tensor(rng.standard_normal((1, 2, 5, 5)), dtype=dtype)


@pytest.mark.parametrize("which", ["input", "weight"])
def test_conv2d_refuses_an_integer_tensor_and_says_how_to_convert(which):
    x, w = _image(), Tensor(rng.standard_normal((3, 2, 3, 3)), dtype=np.float32)
    if which == "input":
        x = Tensor(np.ones((1, 2, 5, 5), dtype=np.int64))
    else:
        w = Tensor(np.ones((3, 2, 3, 3), dtype=np.int64))
    with pytest.raises(TypeError, match=rf"conv2d: {which} must be float32 or float64, got int64"
                       r".*astype"):
        F.conv2d(x, w)


def test_max_pool2d_refuses_an_integer_tensor_and_says_how_to_convert():
    with pytest.raises(TypeError, match=r"max_pool2d: input must be float32 or float64, "
                       r"got int64.*astype"):
        F.max_pool2d(Tensor(np.ones((1, 1, 4, 4), dtype=np.int64)), 2)


@pytest.mark.parametrize("dtype", [np.float16, np.int32, np.uint8])
def test_kernels_refuse_other_widths_put_into_data_by_hand(dtype):
    # Tensor() would have converted them; a hand-made .data never reaches a kernel unchecked
    x = _image()
    x.data = x.data.astype(dtype)
    with pytest.raises(TypeError, match=f"max_pool2d: input must be float32 or float64, "
                       f"got {np.dtype(dtype)}"):
        F.max_pool2d(x, 2)
    w = Tensor(rng.standard_normal((3, 2, 3, 3)), dtype=np.float32)
    with pytest.raises(TypeError, match=f"conv2d: input must be float32 or float64, "
                       f"got {np.dtype(dtype)}"):
        F.conv2d(x, w)


@pytest.mark.parametrize("weight_dtype, bias_dtype, culprit", [
    (np.float64, np.float32, "weight"),
    (np.float32, np.float64, "bias"),
])
def test_conv2d_refuses_mixed_float_widths_naming_the_argument(weight_dtype, bias_dtype,
                                                                culprit):
    x = _image(np.float32)
    w = Tensor(rng.standard_normal((3, 2, 3, 3)), dtype=weight_dtype)
    b = Tensor(rng.standard_normal(3), dtype=bias_dtype)
    with pytest.raises(TypeError, match=f"conv2d: input is float32 .* but {culprit} is float64"):
        F.conv2d(x, w, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_keep_the_dtype_in_values_and_gradients(dtype):
    x = Tensor(rng.standard_normal((2, 2, 6, 6)), dtype=dtype, requires_grad=True)
    w = Tensor(rng.standard_normal((3, 2, 3, 3)), dtype=dtype, requires_grad=True)
    b = Tensor(rng.standard_normal(3), dtype=dtype, requires_grad=True)
    out = F.max_pool2d(F.conv2d(x, w, b, padding=1), 2)
    assert out.dtype == dtype
    (out * out).sum().backward()
    assert (x.grad.dtype, w.grad.dtype, b.grad.dtype) == (np.dtype(dtype),) * 3


# ---- mixed float32 / float64 elsewhere: numpy's promotion, each gradient in its own dtype ------

def _promoted_matmul(a, b):
    """torch refuses mixed-dtype matmul; numpy promotes both operands to float64 first."""
    return a.double() @ b.double() if isinstance(a, torch.Tensor) else a @ b


MIXED = [
    ("add", lambda a, b: a + b, [(3, 4), (4,)]),
    ("sub", lambda a, b: a - b, [(3, 1), (1, 4)]),
    ("mul", lambda a, b: a * b, [(2, 3, 4), (3, 4)]),
    ("div", lambda a, b: a / (b * b + 1), [(3, 4), (3, 4)]),
    ("matmul", _promoted_matmul, [(3, 4), (4, 2)]),
    ("batched matmul", _promoted_matmul, [(2, 3, 4), (4, 5)]),
    ("matmul vector", _promoted_matmul, [(4,), (4, 3)]),
    ("mse_loss", lambda a, b: F.mse_loss(a, b) if isinstance(a, Tensor)
     else torch.nn.functional.mse_loss(a, b), [(3, 4), (3, 4)]),
]


@pytest.mark.parametrize("name, fn, shapes", MIXED, ids=[m[0] for m in MIXED])
@pytest.mark.parametrize("dtypes", [(np.float32, np.float64), (np.float64, np.float32)],
                         ids=["f32-f64", "f64-f32"])
def test_mixed_float_operands_promote_and_each_grad_keeps_its_dtype(name, fn, shapes, dtypes):
    arrays = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]
    ours = [Tensor(a, dtype=a.dtype, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    o, t = fn(*ours), fn(*theirs)
    assert o.dtype == np.result_type(*dtypes) == np.float64
    np.testing.assert_allclose(o.data, t.detach().numpy(), rtol=1e-12, atol=1e-12)
    upstream = rng.standard_normal(o.shape)
    o.backward(upstream)
    t.backward(torch.from_numpy(upstream))
    for i, (a, ot, tt) in enumerate(zip(arrays, ours, theirs)):
        assert ot.grad.dtype == a.dtype, f"grad of input {i} is {ot.grad.dtype}, not {a.dtype}"
        # both computed the gradient in float64 and rounded it once to the input's dtype
        np.testing.assert_allclose(ot.grad, tt.grad.numpy(), rtol=1e-6 if a.dtype ==
                                   np.float32 else 1e-12, atol=1e-7, err_msg=f"input {i}")


def test_a_float32_graph_fed_a_float64_array_promotes_and_keeps_float32_grads():
    x = Tensor(rng.standard_normal((4, 3)), requires_grad=True, dtype=np.float32)
    scale = rng.standard_normal(3)                                          # float64 numpy
    out = (x * scale).relu().sum()
    assert out.dtype == np.float64
    out.backward()
    assert x.grad.dtype == np.float32
    xt = torch.tensor(x.data, requires_grad=True)
    (xt * torch.from_numpy(scale)).relu().sum().backward()  # torch promotes the same way
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=1e-6)


def test_python_scalars_do_not_promote_float32():
    x = Tensor([1.0, 2.0], requires_grad=True)
    for y in (x * 2.5, 2.5 + x, x / 3, x - 1, x ** 2):
        assert y.dtype == np.float32


def test_a_float_tensor_used_twice_in_two_dtypes_accumulates_one_grad_in_its_own_dtype():
    x = Tensor(rng.standard_normal(5), requires_grad=True, dtype=np.float32)
    y = Tensor(rng.standard_normal(5))                                      # float64
    xt = torch.tensor(x.data, requires_grad=True)
    ((x * y).sum() + (x * x).sum()).backward()
    ((xt * torch.from_numpy(y.data)).sum() + (xt * xt).sum()).backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=1e-6)


def test_the_mnist_loader_and_example_keep_training_in_float32():
    # PyTorch's rule keeps float64 numpy data float64; the loader hands out float32 batches,
    # so a training step of the example stays in float32 end to end
    example = load_example("mnist")
    train = MNIST(example.DEFAULT_DATA_DIR, train=False, download=False)
    x, y = next(iter(DataLoader(train, 8, normalize=example.NORMALIZE)))
    assert x.dtype == np.float32 and y.dtype == np.int64
    model = example.make_model("small")
    loss = F.cross_entropy(model(Tensor(x)), y)
    loss.backward()
    assert loss.dtype == np.float32
    assert {p.grad.dtype for p in model.parameters()} == {np.dtype(np.float32)}
