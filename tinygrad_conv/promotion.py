"""Which dtype a binary op computes in: PyTorch's type promotion, for the dtypes a Tensor holds
(bool, int64, float32, float64).

Categories rank bool < integer < float. An operand is one of three kinds, in PyTorch's order of
precedence:
- a tensor with dimensions (ndim >= 1),
- a 0-d tensor,
- a number: a Python bool, int or float, or a numpy scalar (PyTorch takes both as plain numbers;
  a float number counts as float32, PyTorch's default dtype).
Within a kind the wider dtype wins, and the higher category (int64 with float32 is float32).
A lower kind changes the result only when its category is higher: `int64 tensor + 2.5` is
float32, `int64 tensor + float64 0-d tensor` is float64, but `float32 tensor + float64 0-d
tensor` stays float32 and `float32 tensor + 2.0` stays float32.

A numpy array operand follows numpy's own rule (`np.result_type`), because that is what PyTorch
does with one: numpy computes the op and PyTorch wraps the result. Where numpy's answer is a
dtype a Tensor cannot hold, the nearest one that holds every value is taken (int8, int32,
uint8 -> int64; float16 -> float32).
"""

from __future__ import annotations

import numpy as np

BOOL = np.dtype(np.bool_)
INT64 = np.dtype(np.int64)
FLOAT32 = np.dtype(np.float32)
FLOAT64 = np.dtype(np.float64)

_CATEGORY = {"b": 0, "i": 1, "u": 1, "f": 2}


def _promote(a: np.dtype | None, b: np.dtype | None) -> np.dtype | None:
    """PyTorch's promote_types on our dtypes: the higher category, then the wider dtype."""
    if a is None or b is None:
        return b if a is None else a
    rank_a, rank_b = _CATEGORY[a.kind], _CATEGORY[b.kind]
    if rank_a != rank_b:
        return a if rank_a > rank_b else b
    return a if a.itemsize >= b.itemsize else b


def _combine(higher: np.dtype | None, lower: np.dtype | None) -> np.dtype | None:
    """A lower-precedence kind's dtype counts only if its category is higher (PyTorch's
    combine_categories)."""
    if higher is None:
        return lower
    if lower is None or higher.kind == "f":
        return higher
    if higher.kind == "b" or lower.kind == "f":
        return _promote(higher, lower)
    return higher


def number_dtype(value) -> np.dtype:
    """The dtype a Python or numpy number takes part in promotion with."""
    kind = np.asarray(value).dtype.kind
    return BOOL if kind == "b" else FLOAT32 if kind == "f" else INT64


def result_dtype(tensors: list[np.ndarray], numbers: tuple = ()) -> np.dtype:
    """The dtype of an op on tensors (given by their arrays) and Python/numpy numbers."""
    dimensioned = zero_dim = wrapped = None
    for data in tensors:
        if data.ndim:
            dimensioned = _promote(dimensioned, data.dtype)
        else:
            zero_dim = _promote(zero_dim, data.dtype)
    for value in numbers:
        wrapped = _promote(wrapped, number_dtype(value))
    return _combine(dimensioned, _combine(zero_dim, wrapped))


def array_result_dtype(tensor: np.dtype, array: np.dtype) -> np.dtype:
    """numpy's result dtype for a tensor and a numpy array, as the nearest dtype we hold."""
    found = np.result_type(tensor, array)
    if found.kind == "b":
        return BOOL
    if found.kind in "iu":
        return INT64
    if found.kind == "f":
        return FLOAT64 if found.itemsize >= 8 else FLOAT32
    raise TypeError(f"a numpy array of dtype {array} cannot be an operand; use numbers "
                    "(bool, int or float arrays)")


def true_division_dtype(dtype: np.dtype, with_array: bool) -> np.dtype:
    """`/` always gives a float: an integer or bool result becomes float32 (PyTorch's default),
    or float64 when a numpy array took part (numpy's true_divide)."""
    if dtype.kind == "f":
        return dtype
    return FLOAT64 if with_array else FLOAT32
