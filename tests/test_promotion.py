"""Type promotion against PyTorch: every pairing of a tensor (bool, int64, float32, float64;
0-d or not) with another tensor, a Python number, a numpy scalar or a numpy array, through
+ - * / ** and the comparisons, gives PyTorch's dtype and values, or an error where PyTorch
raises one. A list operand is a TypeError, as in PyTorch.

PyTorch hands an op with a numpy array to numpy and wraps numpy's result (turning a bool
result into uint8, and in some orders refusing), so for those rows numpy is the reference.
Where the answer is a dtype a Tensor cannot hold, we give the nearest one that holds every
value (int8/int32/uint8 -> int64, float16 -> float32). PyTorch takes a numpy bool scalar as a
float (`bool tensor + np.bool_(True)` is float32); we take it as a bool, so it is left out.
"""

from __future__ import annotations

import operator
import warnings

import numpy as np
import pytest
import torch

from tinygrad_conv import Tensor

NEAREST_WE_HOLD = {torch.int8: np.int64, torch.int16: np.int64, torch.int32: np.int64,
                   torch.uint8: np.int64, torch.float16: np.float32}
TORCH_TO_NUMPY = {torch.bool: np.bool_, torch.int64: np.int64, torch.float32: np.float32,
                  torch.float64: np.float64}

# values with no zero on the right, so / stays finite (bools excepted: x / False is inf in both)
LEFT = {np.bool_: [True, False, True], np.int64: [3, -2, 7], np.float32: [1.5, -2.25, 3.0],
        np.float64: [0.1, -2.5, 7.0]}
RIGHT = {np.bool_: [True, True, False], np.int64: [2, 5, -3], np.float32: [0.5, 4.0, -1.25],
         np.float64: [3.1, -0.2, 2.0], np.int32: [2, 5, -3], np.uint8: [2, 5, 3],
         np.float16: [0.5, 4.0, -1.25]}

ARITHMETIC = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
COMPARISONS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
               ">": operator.gt, ">=": operator.ge}


def tensors(values: dict, dtypes) -> list[tuple[str, np.ndarray]]:
    """(name, array) for each dtype, 0-d and 1-d."""
    out = []
    for dtype in dtypes:
        array = np.array(values[dtype], dtype=dtype)
        out += [(f"{np.dtype(dtype)}[3]", array), (f"{np.dtype(dtype)}[]", np.array(array[1]))]
    return out


def left_operands():
    return tensors(LEFT, [np.bool_, np.int64, np.float32, np.float64])


def right_operands():
    """(name, ours, torch's) for every kind of right-hand operand."""
    out = []
    for name, array in tensors(RIGHT, [np.bool_, np.int64, np.float32, np.float64]):
        out.append((f"tensor {name}", Tensor(array), torch.from_numpy(array)))
    for value in (True, 3, 2.5, -4):
        out.append((f"python {value!r}", value, value))
    for value in (np.int32(3), np.int64(-2), np.float32(2.5), np.float64(0.75), np.uint8(4)):
        out.append((f"numpy {value.dtype} scalar", value, value))
    for name, array in tensors(RIGHT, list(RIGHT)):
        out.append((f"numpy array {name}", array, None))  # numpy is the reference
    return out


def run(fn, args: tuple):
    """(fn(*args), None) or (None, exception type name)."""
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return fn(*args), None
    except (TypeError, ValueError, RuntimeError) as e:
        return None, type(e).__name__


def compare(case: str, fn, ours_args: tuple, theirs_args: tuple, mismatches: list[str]) -> None:
    """Append to `mismatches` if fn(*ours_args) differs from fn(*theirs_args) (the reference)."""
    ours, our_error = run(fn, ours_args)
    theirs, their_error = run(fn, theirs_args)
    if their_error or our_error:
        if not (their_error and our_error):
            mismatches.append(f"{case}: torch {their_error or theirs.dtype}, ours "
                              f"{our_error or ours.dtype}")
        return
    if not isinstance(theirs, torch.Tensor):  # numpy's answer
        theirs = torch.from_numpy(np.asarray(theirs))
    want = NEAREST_WE_HOLD.get(theirs.dtype, TORCH_TO_NUMPY.get(theirs.dtype))
    if want is None or ours.dtype != want:
        mismatches.append(f"{case}: torch {theirs.dtype}, ours {ours.dtype}")
        return
    if theirs.dtype in (torch.int8, torch.int16, torch.int32, torch.uint8):
        # numpy wraps around in the narrow type; our int64 holds the exact value
        bits = 8 * theirs.element_size()
        if not np.all((ours.data - theirs.numpy().astype(np.int64)) % 2**bits == 0):
            mismatches.append(f"{case}: values {ours.data} vs torch {theirs}")
        return
    expected = theirs.numpy().astype(want)
    tolerance = 1e-3 if theirs.dtype == torch.float16 else 1e-6
    if ours.shape != expected.shape or not np.allclose(ours.data, expected, rtol=tolerance,
                                                       equal_nan=True):
        mismatches.append(f"{case}: values {ours.data} vs torch {expected}")


def test_binary_ops_promote_as_pytorch_does_for_every_operand_kind():
    mismatches: list[str] = []
    checked = 0
    for left_name, left in left_operands():
        ours_left = Tensor(left)
        for right_name, ours_right, theirs_right in right_operands():
            # the reference: PyTorch, or numpy for a numpy array operand
            theirs_left = torch.from_numpy(left) if theirs_right is not None else left
            theirs_right = ours_right if theirs_right is None else theirs_right
            for symbol, op in (ARITHMETIC | COMPARISONS).items():
                case = f"{left_name} {symbol} {right_name}"
                compare(case, op, (ours_left, ours_right), (theirs_left, theirs_right),
                        mismatches)
                if not isinstance(ours_right, Tensor):  # the number or array on the left
                    compare(f"{right_name} {symbol} {left_name}", op, (ours_right, ours_left),
                            (theirs_right, theirs_left), mismatches)
                checked += 1
    assert checked > 1500
    assert not mismatches, f"{len(mismatches)} differ from PyTorch:\n" + "\n".join(mismatches[:40])


@pytest.mark.parametrize("exponent", [2, 3, 0, 0.5, 2.0, -1, -0.5, np.float32(0.5), np.int64(2)])
def test_pow_with_a_number_promotes_as_pytorch_does(exponent):
    mismatches: list[str] = []
    for name, left in left_operands():
        if left.dtype == np.bool_:
            continue  # not interesting: PyTorch's bool ** number is its int64 ** number
        compare(f"{name} ** {exponent!r}", operator.pow, (Tensor(left), exponent),
                (torch.from_numpy(left), exponent), mismatches)
    assert not mismatches, "\n".join(mismatches)


def test_the_issues_integer_examples_give_pytorchs_numbers():
    assert (Tensor([4, 9]) ** 0.5).data.tolist() == [2.0, 3.0]
    assert (Tensor([1, 2]) + np.float32(0.5)).data.tolist() == [1.5, 2.5]
    assert (Tensor([1, 2]) * np.float32(2.5)).data.tolist() == [2.5, 5.0]
    assert (Tensor([1, 2]) / Tensor([2, 4])).dtype == np.float32


@pytest.mark.parametrize("op", [operator.add, operator.sub, operator.mul, operator.truediv,
                                operator.matmul])
@pytest.mark.parametrize("operand", [[1.0, 2.0], (1.0, 2.0), "2", None, {1: 2}],
                         ids=["list", "tuple", "str", "None", "dict"])
def test_a_list_or_other_non_number_operand_is_a_type_error_as_in_pytorch(op, operand):
    with pytest.raises(TypeError):
        op(Tensor([1.0, 2.0]), operand)
    with pytest.raises(TypeError):
        op(operand, Tensor([1.0, 2.0]))
    with pytest.raises(TypeError):  # PyTorch agrees
        op(torch.tensor([1.0, 2.0]), operand)


def test_a_python_int_beyond_int64_is_an_error_naming_the_op():
    with pytest.raises(ValueError, match="add: .* out of range|add: .*does not fit in int64"):
        Tensor([1, 2]) + 2**64
    with pytest.raises(ValueError, match="mul: 9223372036854775808 does not fit in int64"):
        Tensor([1, 2]) * 2**63


def test_gradients_flow_through_promotion_in_each_inputs_own_dtype():
    a = Tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
    s = Tensor(np.array(3.0), requires_grad=True)  # a float64 0-d tensor: the result stays f32
    out = a * s + Tensor([1, 2])
    ta = torch.tensor([1.0, 2.0], requires_grad=True)
    ts = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    theirs = ta * ts + torch.tensor([1, 2])
    assert out.dtype == np.float32 and theirs.dtype == torch.float32
    out.sum().backward()
    theirs.sum().backward()
    assert a.grad.dtype == np.float32 and s.grad.dtype == np.float64
    np.testing.assert_allclose(a.grad, ta.grad.numpy())
    np.testing.assert_allclose(s.grad, ts.grad.numpy())


@pytest.mark.parametrize("method", ["exp", "log", "sigmoid", "tanh", "relu", "sum", "max",
                                    "mean", "softmax", "log_softmax", "__neg__"])
def test_unary_ops_on_integer_and_bool_tensors_follow_pytorch(method):
    mismatches: list[str] = []
    for name, left in left_operands():
        args = (0,) if method in ("softmax", "log_softmax") else ()
        if method in ("softmax", "log_softmax") and left.ndim == 0:
            continue
        compare(f"{name}.{method}()", operator.methodcaller(method, *args), (Tensor(left),),
                (torch.from_numpy(left),), mismatches)
    assert not mismatches, "\n".join(mismatches)
