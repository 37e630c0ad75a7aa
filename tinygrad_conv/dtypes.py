"""The dtypes a Tensor holds, the dtype a new tensor gets, and the dtype a binary op computes in.

Read top to bottom:
1. The one definition of the dtypes: bool, int64, float32, float64.
2. A new tensor's dtype (`to_array`): PyTorch's rule for `torch.tensor(data)`.
3. Promotion (`binary_dtype`): PyTorch's type promotion for the dtypes we hold.

Promotion ranks the categories bool < integer < float. An operand is one of three kinds, in
PyTorch's order of precedence:
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

# ----------------------------------------------------------------------------------------------
# 1. The dtypes (every other module imports these)
# ----------------------------------------------------------------------------------------------

BOOL = np.dtype(np.bool_)
INT64 = np.dtype(np.int64)
FLOAT32 = np.dtype(np.float32)
FLOAT64 = np.dtype(np.float64)
FLOAT_DTYPES = (FLOAT32, FLOAT64)
_INT64_MAX = np.iinfo(np.int64).max
NUMBERS = (int, float, np.bool_, np.integer, np.floating)  # bool is an int


def as_dtype(dtype) -> np.dtype:
    """The dtype a user asked for, if it is one a Tensor can hold."""
    try:
        dt = np.dtype(getattr(dtype, "name", dtype) if not isinstance(dtype, np.dtype) else dtype)
    except TypeError:
        raise TypeError(
            f"Tensor: dtype {dtype!r} is not a dtype; use float32, float64, int64 or bool"
        ) from None
    if dt in FLOAT_DTYPES or dt == INT64 or dt == BOOL:
        return dt
    raise TypeError(
        f"Tensor: dtype {dt} is not supported; use float32, float64, int64 or bool")


def need_float(op: str, dtype: np.dtype) -> None:
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: needs a float tensor, got {dtype} (PyTorch refuses it too); "
                        f"call .float() first")


def float_dtype(where: str, dtype, default=np.float32) -> np.dtype:
    """`dtype` (None: `default`) as float32 or float64, else a TypeError naming `where`."""
    try:
        dt = np.dtype(default if dtype is None else getattr(dtype, "name", dtype))
    except TypeError:
        raise TypeError(f"{where}: dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{where}: dtype must be float32 or float64, got {dt}")
    return dt


# ----------------------------------------------------------------------------------------------
# 2. A new tensor's dtype
# ----------------------------------------------------------------------------------------------


def to_array(data, dtype=None) -> np.ndarray:
    """A fresh numpy array for a new Tensor: `dtype` if given, else PyTorch's rule
    (`default_dtype`). `data` holds numbers (a numpy array or scalar, a Python number, a
    nested list); anything else is a TypeError, an int beyond int64 a ValueError."""
    try:
        array = np.asarray(data)
    except (ValueError, TypeError) as e:
        raise TypeError(f"Tensor: cannot make a tensor from {type(data).__name__}: {e}") from None
    if array.dtype.kind not in "fiub":
        if _huge_ints(data, array):
            raise ValueError(f"Tensor: {_huge_ints(data, array)} does not fit in int64 "
                             "(PyTorch refuses it too)")
        raise TypeError(
            f"Tensor: data of type {type(data).__name__} with dtype {array.dtype} is not numeric; "
            "give numbers (lists, scalars or numpy arrays of float, int or bool)")
    target = as_dtype(dtype) if dtype is not None else default_dtype(data, array)
    if (target == INT64 or array.dtype.kind == "f") and _huge_ints(data, array):
        # numpy would wrap 2**63 to a negative number, or make [1, 2**63] a float list
        raise ValueError(f"Tensor: {_huge_ints(data, array)} does not fit in int64 (PyTorch "
                         "refuses it too)")
    return np.array(array, dtype=target, copy=True)


def default_dtype(data, array: np.ndarray) -> np.dtype:
    """PyTorch's rule (`torch.tensor`) for the dtype of data given without `dtype=`.

    numpy arrays and scalars (and Tensors) keep their float width: float64 stays float64,
    float32 stays float32. Python floats, and lists of them, become float32 (PyTorch's default
    dtype); a list holding numpy float64 values becomes float64, as in PyTorch. Integers and
    bools become int64. The one width we cannot hold, float16, becomes float32 (exactly).
    """
    kind = array.dtype.kind
    if kind == "b":
        return BOOL
    if kind != "f":
        return INT64
    if isinstance(data, (list, tuple)):
        return FLOAT64 if _holds_numpy_float64(data) else FLOAT32
    if isinstance(data, float) and not isinstance(data, np.generic):  # np.float64 is a float
        return FLOAT32
    return array.dtype if array.dtype in FLOAT_DTYPES else FLOAT32


def _holds_numpy_float64(data) -> bool:
    """Whether a (nested) list or tuple holds a numpy float64 array or scalar anywhere."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, (np.ndarray, np.generic)) and item.dtype == np.float64:
            return True
    return False


def _huge_ints(data, array: np.ndarray) -> int | None:
    """An integer of `data` beyond int64 (that numpy took as uint64, float64 or object), if
    `data` holds only integers; else None. Cheap unless such a number is there."""
    if array.dtype.kind == "u":
        return int(array.max()) if array.size and array.max() > _INT64_MAX else None
    if array.dtype.kind == "f":
        if not isinstance(data, (list, tuple)) or not array.size or not (
                np.abs(array).max() >= 2.0**63):
            return None
    elif array.dtype.kind != "O":
        return None
    stack, huge = [data], None
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, (int, np.integer)) and not isinstance(item, (bool, np.bool_)):
            if not -_INT64_MAX - 1 <= item <= _INT64_MAX:
                huge = int(item)
        else:
            return None  # a float (or anything else) makes it a float list: not our case
    return huge


# ----------------------------------------------------------------------------------------------
# 3. Promotion: the dtype of a binary op
# ----------------------------------------------------------------------------------------------


def binary_dtype(op: str, a: np.ndarray, b, b_is_tensor: bool,
                 division: bool = False) -> np.dtype | None:
    """The dtype `op` computes in for a tensor holding `a` and the operand `b`: another
    tensor's array (`b_is_tensor`), a number or a numpy array. None when `b` is a list, a
    string or anything PyTorch refuses too (the operator then returns NotImplemented)."""
    if b_is_tensor:
        dtype = result_dtype([a, b])
    elif isinstance(b, NUMBERS):
        dtype = result_dtype([a], (b,))
    elif isinstance(b, np.ndarray):
        try:
            dtype = array_result_dtype(a.dtype, b.dtype)
        except TypeError as e:
            raise TypeError(f"{op}: {e}") from None
    else:
        return None
    if division:
        dtype = true_division_dtype(dtype, isinstance(b, np.ndarray) and not b_is_tensor)
    return dtype


def operand_array(op: str, value, dtype: np.dtype) -> np.ndarray:
    """A number or numpy array operand as an array of `dtype`, or a ValueError naming `op`."""
    try:
        return to_array(value, dtype)
    except ValueError as e:  # a Python int beyond int64
        raise ValueError(f"{op}: {str(e).removeprefix('Tensor: ')}") from None


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


def check_subtraction(a: np.ndarray, b, b_is_tensor: bool) -> None:
    """PyTorch refuses `-` with any bool operand; numpy (which PyTorch hands an array operand
    to) only with two. `b`: another tensor's array, a number or a numpy array."""
    if b_is_tensor:
        refused = a.dtype == BOOL or b.dtype == BOOL
    elif isinstance(b, np.ndarray):
        refused = a.dtype == BOOL and b.dtype == BOOL
    else:
        refused = a.dtype == BOOL or isinstance(b, (bool, np.bool_))
    if refused:
        raise TypeError("sub: subtraction with a bool tensor is not supported (as in PyTorch); "
                        "use ^ for the logical xor of two masks, ~ to invert one, or .long()")


def check_matmul_dtypes(a: np.dtype, b: np.dtype) -> None:
    """PyTorch's matmul wants one dtype; we let float32 and float64 meet (numpy's promotion,
    each gradient in its own dtype), but refuse a float with an integer or bool, as it does."""
    if a != b and not (a.kind == b.kind == "f"):
        raise TypeError(
            f"matmul: expected both operands to have the same dtype, got {a} and {b} (PyTorch "
            "refuses it too); call .float() on the other one first")


def pow_dtype(a: np.ndarray, exponent) -> tuple[np.dtype, int | float]:
    """The dtype of `tensor ** exponent` for a number exponent, and the exponent as a Python
    int (integer result) or float; a TypeError or ValueError for what PyTorch refuses too."""
    if isinstance(exponent, np.ndarray) or not np.isscalar(exponent) \
            or isinstance(exponent, (bool, np.bool_, complex, np.complexfloating, str)):
        raise TypeError(
            f"pow: the exponent must be a Tensor or a Python or numpy real scalar, got "
            f"{type(exponent).__name__}")
    dtype = result_dtype([a], (exponent,))
    if dtype.kind == "f":
        return dtype, float(exponent)
    if exponent < 0:
        raise ValueError(f"pow: integers to negative integer powers are not allowed "
                         f"(a {a.dtype} tensor ** {exponent}); use .float() first")
    return dtype, int(exponent)
