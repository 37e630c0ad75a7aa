# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Value: one scalar of a computation graph, with micrograd's API and the engine in C.

    from tinygrad_conv import Value
    a, b = Value(2.0), Value(-3.0)
    c = (a * b + 1).tanh()
    c.backward()            # a.grad == (1 - c.data**2) * b.data

Each Value holds its number (`data`) and dL/d(it) (`grad`) as C doubles, the op that made it
as a small integer, and its one or two operands. Where micrograd stores a Python closure per
node, here every op has a forward (which builds the node) and a backward (a C function reading
the node's fields); `backward()` orders the graph with an iterative depth-first search that
marks nodes with a per-walk number instead of filling a Python set, then calls each node's
backward through a table indexed by the op code. No Python code runs during backward, unless
you put some there, micrograd style: a node made by `Value(data, (x,), 'cube')` whose
`_backward` you set to a function of no arguments (or a node of a `Value` subclass that
defines `_backward`) is backpropagated by calling that function, in topological order, while
the built-in nodes around it stay in C. `Value` can be subclassed (to add methods such as
`cube`); the built-in ops of a subclass instance return plain Values, as micrograd's do.

The numbers are micrograd's, bit for bit: every op computes what micrograd computes, in the
same order (a / b is a * b**-1, a - b is a + b*(-1), and so on), and gradients add up with
`+=` across uses and across backward() calls. (Where one grad adds up three or more terms, the
order of the additions can change its last bit: micrograd's follows the memory addresses of its
nodes through its `_prev` sets, ours the order of the operands.) Only the graph is smaller:
`x * 2` is one node that keeps the 2, where micrograd makes a Value for the 2 as well. Python
numbers mix with Values on either side of + - * /; the forward follows Python's float rules
(0.0 ** -1 raises ZeroDivisionError, a result too large for a float from ** or exp raises
OverflowError, NaN and inf go through + - * as in Python). log of a number <= 0 raises
ValueError, and so does a negative number to a fractional power (micrograd would return a
complex number).
"""

cimport cython
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.long cimport PyLong_AsDouble
from cpython.ref cimport PyObject
from libc.math cimport exp, floor, isfinite, isinf, log, tanh
from libc.stdlib cimport free, realloc
from libc.string cimport memset

import numbers

cdef extern from *:
    """
    #include <math.h>
    /* libm's pow(), never replaced by the compiler: GCC turns pow(x, -1.0) into 1.0 / x, which
       can differ in the last bit from the pow() that CPython's float ** calls (micrograd's
       numbers); an exponent the compiler cannot see keeps the call. */
    static double tgc_libm_pow(double base, double exponent) {
        volatile double unseen = exponent;
        return pow(base, unseen);
    }
    """
    double pow "tgc_libm_pow"(double base, double exponent) noexcept nogil


cdef extern from "Python.h":
    Py_ssize_t Py_REFCNT(PyObject *o)
    void _incref "Py_INCREF"(PyObject *o)
    void _decref "Py_DECREF"(PyObject *o)
    int PyObject_GC_IsTracked(PyObject *o)
    void PyObject_GC_Track(PyObject *o)
    ctypedef struct PyTypeObject:
        Py_ssize_t tp_basicsize
    ctypedef PyObject *(*allocfunc)(PyTypeObject *t, Py_ssize_t n) noexcept
    ctypedef void (*freefunc)(void *o) noexcept
    ctypedef struct _Slots "PyTypeObject":     # the slots set at the end of this file
        allocfunc tp_alloc
        freefunc tp_free
    PyObject *_PyObject_GC_New(PyTypeObject *t)
    PyObject *PyObject_Init(PyObject *o, PyTypeObject *t)
    PyObject *PyType_GenericAlloc(PyTypeObject *t, Py_ssize_t n)
    void PyObject_GC_Del(void *o)
    PyTypeObject *Py_TYPE(PyObject *o)

__all__ = ["Value", "topological_order"]

# op codes: what made a Value. K is a number kept in the node (x + 2 is ADD_K with k = 2).
cdef enum:
    LEAF = 0    # made by Value(...): nothing to backpropagate to
    ADD         # a + b
    SUB         # a - b
    MUL         # a * b
    DIV         # a / b
    ADD_K       # a + k    (also k + a, and a - k as a + (-k))
    MUL_K       # a * k    (also k * a, -a as a * -1, and a / k as a * k**-1)
    K_SUB       # k - a
    K_DIV       # k / a
    POW         # a ** k
    RELU
    TANH
    EXP
    LOG
    SIGMOID
    N_OPS


@cython.no_gc_clear  # the collector breaks a cycle at its Python objects: see _keep_track
cdef class Value:
    """One scalar and its gradient: micrograd's `Value(data, _children=(), _op='', label='')`.

    `data` and `grad` are floats (C doubles). `_prev` is the set of Values this one was made
    from and `_op` names the op; `label` is a name for pictures (`viz.draw`). Values passed as
    `_children` receive a gradient through this node only from the `_backward` you give it
    (as in micrograd: a custom op's node is a Value with children and a `_backward`).
    Subclasses may add methods; the built-in ops return plain Values.
    """

    cdef public double data
    cdef double _grad           # .grad
    cdef Value _a               # the operands; None when absent
    cdef Value _b
    cdef double _k              # the number of a *_K op, or the exponent of POW
    cdef double _inner_grad     # grad of the inner node of SUB, DIV, K_SUB, K_DIV (see below)
    cdef int _code              # the op code
    cdef bint _k_is_int         # k was given as an int (how _op prints it)
    cdef bint _made             # __init__ has run, or an op made it
    cdef bint _tracked          # handed to the cycle collector by _track
    cdef unsigned long long _mark   # last graph walk that reached this node (see _walk)
    cdef _Extra _extra          # label, a user-given op name and children: None for most nodes

    def __init__(self, data, _children=(), str _op='', str label=''):
        cdef double value
        cdef bint is_int
        if isinstance(data, Value) or not _as_double(data, &value, &is_int):
            raise TypeError(f"Value: data must be a real number (int or float), got "
                            f"{type(data).__name__}: {data!r}")
        children = tuple(_children)
        for child in children:
            if not isinstance(child, Value):
                raise TypeError(f"Value: _children must hold Values, got "
                                f"{type(child).__name__}: {child!r}")
        if children and self._made:  # a Value's children must be older than it: no cycles
            raise TypeError("Value: __init__ with _children on a Value that already exists")
        self._made = True
        self.data = value
        if len(children) > 0:
            self._a = children[0]
        if len(children) > 1:
            self._b = children[1]
        if len(children) > 2 or _op or label:
            backward = self._extra.backward if self._extra is not None else None
            self._extra = _Extra(label, _op, children[2:], backward)
        _keep_track(self)

    # ---- what micrograd's Value shows --------------------------------------------------------

    @property
    def _prev(self):
        """The set of Values this one was made from (micrograd's `_prev`)."""
        return set(self._children)

    @property
    def _children(self):
        """The Values this one was made from, in operand order ((x, x) for x * x)."""
        if self._extra is not None:
            return tuple(c for c in (self._a, self._b) if c is not None) + self._extra.more
        if self._b is not None:
            return (self._a, self._b)
        if self._a is not None:
            return (self._a,)
        return ()

    @property
    def _op(self):
        """The op that made this Value: '+', '*', '**2', 'ReLU', ... ('' for a leaf).

        An op with a number shows the number: x + 2 is '+2', 2 - x is '2-', -x is '*-1'.
        """
        if self._extra is not None and self._extra.op:
            return self._extra.op
        k = _number_text(self._k, self._k_is_int)
        return _OP_NAMES[self._code].format(k=k)

    @property
    def grad(self):
        """dL/d(this Value): 0 until a backward() reaches it; each backward() adds to it."""
        return self._grad

    @grad.setter
    def grad(self, double grad):
        self._grad = grad
        if grad == 0.0:     # zeroing a - b or a / b zeroes micrograd's inner node too (below);
            self._inner_grad = 0.0  # a `_backward` adding to it (x.grad += ...) does not

    @property
    def label(self):
        return self._extra.label if self._extra is not None else ""

    @label.setter
    def label(self, label):
        if not isinstance(label, str):
            raise TypeError(f"Value.label must be a str, got {type(label).__name__}")
        if self._extra is None:
            self._extra = _Extra(label, "", ())
        else:
            self._extra.label = label

    @property
    def _backward(self):
        """What backward() calls at this node, micrograd's `_backward`: the function you set,
        else one step of the built-in backward (this node's grad times its local derivatives,
        added to its operands' grads; nothing for a leaf), which backward() runs in C."""
        if self._extra is not None and self._extra.backward is not None:
            return self._extra.backward
        return self._builtin_backward

    @_backward.setter
    def _backward(self, fn):
        if not callable(fn):
            raise TypeError(f"Value._backward must be a function of no arguments that adds "
                            f"to the operands' .grad (as in micrograd), got "
                            f"{type(fn).__name__}: {fn!r}")
        if self._extra is None:
            self._extra = _Extra("", "", ())
        self._extra.backward = fn
        _track(self)    # fn may refer to this Value (micrograd's closures do): a cycle

    @_backward.deleter
    def _backward(self):        # back to the built-in backward of the op
        if self._extra is not None:
            self._extra.backward = None

    def _builtin_backward(self):
        """One step of the built-in backward at this node (what `_backward` is by default)."""
        _BACKWARD[self._code](self)

    def __repr__(self):
        return f"Value(data={self.data}, grad={self._grad})"

    def __dealloc__(self):
        """Free a chain of any length without recursion.

        Freeing a Value drops its references to its operands; an operand that had no other
        owner is freed inside that call, which frees its own operands inside the next call, and
        so on: one C stack frame per node of a chain, a crash at some 100,000 nodes. Instead,
        the operands this Value holds the last reference to go onto a stack, and the outermost
        __dealloc__ frees them one by one. (Python's trashcan does this for container types,
        but only for those the cycle collector tracks, and most Values are not: see
        _keep_track.)
        """
        global _freeing
        _defer(<PyObject *>self._a)
        _defer(<PyObject *>self._b)
        self._a = None  # drops a reference; a last one is now held by _to_free
        self._b = None
        if _freeing:
            return  # an outer __dealloc__ is emptying the stack
        _freeing = True
        while _to_free.size > 0:
            _to_free.size -= 1
            _decref(_to_free.items[_to_free.size])  # may push that Value's operands
        _freeing = False

    def __reduce__(self):   # pickle and copy: everything but _mark, which only this process reads
        state = getattr(self, "__dict__", None) or None     # a subclass instance's attributes
        return (_rebuild, (self.data, self._grad, self._code, self._a, self._b, self._k,
                           self._k_is_int, self._inner_grad, self._extra, type(self)), state)

    # ---- ops with another Value or a Python number ------------------------------------------
    # Each builds one node; the backward of every op is in the section below, in the same order.

    def __add__(self, other):
        cdef double k
        cdef bint is_int
        if _is_value(other):
            return _node(self.data + (<Value>other).data, ADD, self, other, 0.0, False)
        if _as_double(other, &k, &is_int):
            return _node(self.data + k, ADD_K, self, None, k, is_int)
        return NotImplemented

    def __radd__(self, other):      # other + self: micrograd computes self + other
        cdef double k
        cdef bint is_int
        if _as_double(other, &k, &is_int):
            return _node(self.data + k, ADD_K, self, None, k, is_int)
        return NotImplemented

    def __sub__(self, other):       # micrograd: self + (-other); the same number as a - b
        cdef double k
        cdef bint is_int
        if _is_value(other):
            return _node(self.data - (<Value>other).data, SUB, self, other, 0.0, False)
        if _as_double(other, &k, &is_int):
            return _node(self.data + (-k), ADD_K, self, None, -k, is_int)
        return NotImplemented

    def __rsub__(self, other):      # other - self: micrograd computes other + self * -1
        cdef double k
        cdef bint is_int
        if _as_double(other, &k, &is_int):
            return _node(k - self.data, K_SUB, self, None, k, is_int)
        return NotImplemented

    def __mul__(self, other):
        cdef double k
        cdef bint is_int
        if _is_value(other):
            return _node(self.data * (<Value>other).data, MUL, self, other, 0.0, False)
        if _as_double(other, &k, &is_int):
            return _node(self.data * k, MUL_K, self, None, k, is_int)
        return NotImplemented

    def __rmul__(self, other):      # other * self: micrograd computes self * other
        cdef double k
        cdef bint is_int
        if _as_double(other, &k, &is_int):
            return _node(self.data * k, MUL_K, self, None, k, is_int)
        return NotImplemented

    def __truediv__(self, other):   # micrograd: self * other**-1
        cdef double k, inverse
        cdef bint is_int
        if _is_value(other):
            inverse = _pow((<Value>other).data, -1.0, "Value.__truediv__", other)
            return _node(self.data * inverse, DIV, self, other, 0.0, False)
        if _as_double(other, &k, &is_int):
            inverse = _pow(k, -1.0, "Value.__truediv__", other)
            return _node(self.data * inverse, MUL_K, self, None, inverse, False)
        return NotImplemented

    def __rtruediv__(self, other):  # other / self: micrograd computes self**-1 * other
        cdef double k, inverse
        cdef bint is_int
        if _as_double(other, &k, &is_int):
            inverse = _pow(self.data, -1.0, "Value.__rtruediv__", self)
            return _node(inverse * k, K_DIV, self, None, k, is_int)
        return NotImplemented

    def __neg__(self):              # micrograd: self * -1
        return _node(self.data * -1.0, MUL_K, self, None, -1.0, True)

    def __pow__(self, exponent, modulo=None):
        cdef double k
        cdef bint is_int
        if modulo is not None:
            raise TypeError("Value.__pow__: pow() with a modulus is not supported")
        if isinstance(exponent, Value):
            raise TypeError("Value.__pow__: the exponent must be an int or float, not a Value "
                            "(as in micrograd); for Value exponents write "
                            "(exponent * base.log()).exp()")
        if not _as_double(exponent, &k, &is_int):
            raise TypeError(f"Value.__pow__: the exponent must be an int or float, got "
                            f"{type(exponent).__name__}: {exponent!r}")
        return _node(_pow(self.data, k, "Value.__pow__", self), POW, self, None, k, is_int)

    def __rpow__(self, base, modulo=None):
        raise TypeError(f"Value.__rpow__: {type(base).__name__} ** Value is not supported: the "
                        f"exponent must be a number (as in micrograd); write "
                        f"(value * math.log(base)).exp()")

    # ---- functions of one Value ---------------------------------------------------------------

    def relu(self):
        return _node(0.0 if self.data < 0 else self.data, RELU, self, None, 0.0, False)

    def tanh(self):
        return _node(tanh(self.data), TANH, self, None, 0.0, False)

    def exp(self):
        cdef double out = exp(self.data)
        if isinf(out) and isfinite(self.data):
            raise OverflowError(f"Value.exp: exp({self.data!r}) is too large for a float "
                                f"(as math.exp)")
        return _node(out, EXP, self, None, 0.0, False)

    def log(self):
        if self.data <= 0:
            raise ValueError(f"Value.log: log of a number <= 0 is undefined, got "
                             f"data={self.data!r}")
        return _node(log(self.data), LOG, self, None, 0.0, False)

    def sigmoid(self):
        cdef double x = self.data, e, out
        if x >= 0:  # 1 / (1 + exp(-x)), written so that exp never overflows
            out = 1.0 / (1.0 + exp(-x))
        else:
            e = exp(x)
            out = e / (1.0 + e)
        return _node(out, SIGMOID, self, None, 0.0, False)

    # ---- backpropagation ----------------------------------------------------------------------

    def backward(self):
        """Set self.grad = 1, then add every Value's contribution to the grads of its operands,
        outputs before inputs (micrograd's order and rule: grads add up; zero them yourself).
        Each node's step is its `_backward`: in C for the built-in ones, a call for yours."""
        cdef _Buffer order = _Buffer(NULL, 0, 0)
        cdef Py_ssize_t i, n_python
        cdef Value node
        try:
            n_python = _walk(self, &order)
            self._grad = 1.0
            if n_python > 0:
                _backward_calling_python(&order)
                return
            for i in range(order.size - 1, -1, -1):
                node = <Value>order.items[i]
                _BACKWARD[node._code](node)
        finally:
            free(order.items)


@cython.final
cdef class _Extra:
    """What few Values carry: a label, an op name given to Value(...), children past two, and
    the function set as `_backward` (None: the op's built-in backward)."""
    cdef str label
    cdef str op
    cdef tuple more
    cdef object backward

    def __init__(self, str label, str op, tuple more, backward=None):
        self.label = label
        self.op = op
        self.more = more
        self.backward = backward

    def __reduce__(self):
        return (_Extra, (self.label, self.op, self.more, self.backward))


_OP_NAMES = {LEAF: "", ADD: "+", SUB: "-", MUL: "*", DIV: "/", ADD_K: "+{k}", MUL_K: "*{k}",
             K_SUB: "{k}-", K_DIV: "{k}/", POW: "**{k}", RELU: "ReLU", TANH: "tanh",
             EXP: "exp", LOG: "log", SIGMOID: "sigmoid"}


cdef str _number_text(double k, bint is_int):
    """k as micrograd's f'**{other}' prints it: 2 for an int, 2.0 for a float."""
    return str(int(k)) if is_int and isfinite(k) else repr(k)


cdef inline Value _node(double data, int code, Value a, Value b, double k, bint k_is_int):
    """A new Value made by op `code` from a (and b, or the number k)."""
    return _fill(Value.__new__(Value), data, code, a, b, k, k_is_int)


cdef inline Value _fill(Value out, double data, int code, Value a, Value b, double k,
                        bint k_is_int):
    """out, a new Value (or instance of a subclass), made the node of op `code` on a and b."""
    out._made = True
    out.data = data
    out._code = code
    out._a = a
    out._b = b
    out._k = k
    out._k_is_int = k_is_int
    _keep_track(out)
    return out


cdef inline bint _is_value(object x):
    """x is a Value or a Value subclass instance (the exact type first: the common case)."""
    return type(x) is Value or isinstance(x, Value)


cdef inline void _keep_track(Value v) noexcept:
    """Hand the new Value v to the cycle collector only if it can be part of a reference cycle.

    A Value refers to Values made before it, so Values alone form no cycle: one needs Python
    objects that can refer to anything (a function set as `_backward`, often a closure over
    its own node, or a subclass instance's __dict__). Like a tuple of untracked items, a
    Value is born untracked (see _alloc) and tracked only if it is such a Value or one of its
    operands is tracked (then a cycle may run through it); untracked, it costs the collector
    nothing. A Value given a `_backward` later is tracked from then on; Values made from it
    before stay untracked.
    NOTE: so a cycle through those (a `_backward` that refers to a Value made from its own
    node before it was set) is never collected. Nothing can crash: Values have no tp_clear
    (the collector breaks a cycle at its Python objects), so a Value is freed only once
    unreachable, and backward() reads its operands blindly.
    """
    if type(v) is not Value:
        return      # a subclass instance: tracked by Python, its __dict__ may hold anything
    if ((v._a is not None and (v._a._tracked or type(v._a) is not Value))
            or (v._b is not None and (v._b._tracked or type(v._b) is not Value))
            or (v._extra is not None and (v._extra.backward is not None or v._extra.more))):
        _track(v)   # (children past two are rare: only Value(...) makes them)


cdef inline void _track(Value v) noexcept:
    """Hand v to the cycle collector (it now refers to Python objects that may refer to it)."""
    v._tracked = True
    if not PyObject_GC_IsTracked(<PyObject *>v):     # (a subclass's instances are)
        PyObject_GC_Track(<PyObject *>v)


def _rebuild(double data, double grad, int code, Value a, Value b, double k, bint k_is_int,
             double inner_grad, _Extra extra, type cls=Value):
    """A Value from what __reduce__ saved (checked: a backward reads the operands blindly)."""
    if not 0 <= code < N_OPS:
        raise ValueError(f"Value: unpickling an unknown op code {code}")
    binary = code in (ADD, SUB, MUL, DIV)
    if code != LEAF and (a is None or binary != (b is not None)):
        raise ValueError(f"Value: unpickling op {_OP_NAMES[code]!r} with the wrong operands")
    if not issubclass(cls, Value):
        raise ValueError(f"Value: unpickling a {cls.__name__}, which is not a Value")
    cdef Value out = _fill(cls.__new__(cls), data, code, a, b, k, k_is_int)
    out._grad = grad
    out._inner_grad = inner_grad
    out._extra = extra
    if extra is not None and (extra.backward is not None or extra.more):
        _track(out)
    return out


cdef int _as_double(object x, double *out, bint *is_int) except -1:
    """1 and x as a C double if x is a real number (int, float, numpy scalar...), else 0."""
    if type(x) is float:
        out[0] = PyFloat_AS_DOUBLE(x)
        is_int[0] = False
        return 1
    if type(x) is int:
        out[0] = PyLong_AsDouble(x)
        is_int[0] = True
        return 1
    if isinstance(x, numbers.Real) and not isinstance(x, Value):
        out[0] = float(x)
        is_int[0] = isinstance(x, numbers.Integral)
        return 1
    return 0


cdef double _pow(double base, double exponent, str op, object operand) except? -1.0:
    """base ** exponent with Python's float rules (micrograd's `self.data**other`)."""
    if base == 0.0 and exponent < 0.0 and isfinite(exponent):
        raise ZeroDivisionError(f"{op}: 0.0 cannot be raised to a negative power "
                                f"({exponent!r}); operand: {operand!r}")
    if base < 0.0 and isfinite(base) and isfinite(exponent) and exponent != floor(exponent):
        if isinf(pow(-base, exponent)):     # Python's complex result overflows first
            raise OverflowError(f"{op}: {base!r} ** {exponent!r} is too large even as a "
                                f"complex number")
        raise ValueError(f"{op}: a negative number to a fractional power is complex: "
                         f"{base!r} ** {exponent!r}")
    cdef double out = pow(base, exponent)
    if isinf(out) and isfinite(base) and isfinite(exponent):
        raise OverflowError(f"{op}: {base!r} ** {exponent!r} is too large for a float")
    return out


# ---- the backward of every op, in the order of the op codes -----------------------------------
# Each adds out.grad * d(out)/d(operand) to the operand's grad, with micrograd's expressions (so
# the same rounding): `(other * x**(other-1)) * out.grad` for **, and so on. micrograd builds
# a - b as a + n with an inner node n = b * -1, and a / b as a * p with p = b**-1; n and p keep
# their own grads, which a second backward() on the same graph adds to again. `_inner_grad`
# is that grad, so repeated backward() calls give micrograd's numbers too.

ctypedef void (*backward_fn)(Value out) noexcept


cdef void _leaf_backward(Value out) noexcept:
    pass


cdef void _add_backward(Value out) noexcept:      # out = a + b
    out._a._grad += out._grad
    out._b._grad += out._grad


cdef void _sub_backward(Value out) noexcept:      # out = a + n, n = b * -1
    out._a._grad += out._grad
    out._inner_grad += out._grad
    out._b._grad += -1.0 * out._inner_grad


cdef void _mul_backward(Value out) noexcept:      # out = a * b
    out._a._grad += out._b.data * out._grad
    out._b._grad += out._a.data * out._grad


cdef void _div_backward(Value out) noexcept:      # out = a * p, p = b**-1
    cdef double b = out._b.data
    out._a._grad += pow(b, -1.0) * out._grad
    out._inner_grad += out._a.data * out._grad
    out._b._grad += (-1.0 * pow(b, -2.0)) * out._inner_grad


cdef void _add_k_backward(Value out) noexcept:    # out = a + k
    out._a._grad += out._grad


cdef void _mul_k_backward(Value out) noexcept:    # out = a * k
    out._a._grad += out._k * out._grad


cdef void _k_sub_backward(Value out) noexcept:    # out = n + k, n = a * -1
    out._inner_grad += out._grad
    out._a._grad += -1.0 * out._inner_grad


cdef void _k_div_backward(Value out) noexcept:    # out = p * k, p = a**-1
    out._inner_grad += out._k * out._grad
    out._a._grad += (-1.0 * pow(out._a.data, -2.0)) * out._inner_grad


cdef void _pow_backward(Value out) noexcept:      # out = a ** k
    if out._k == 0:     # NOTE: 0 * a**-1 would be NaN at a = 0 (micrograd raises there)
        out._a._grad += 0.0 * out._grad
    else:
        out._a._grad += (out._k * pow(out._a.data, out._k - 1.0)) * out._grad


cdef void _relu_backward(Value out) noexcept:     # out = max(a, 0)
    out._a._grad += (out.data > 0) * out._grad


cdef void _tanh_backward(Value out) noexcept:     # d tanh(a)/da = 1 - tanh(a)^2
    out._a._grad += (1.0 - out.data * out.data) * out._grad


cdef void _exp_backward(Value out) noexcept:      # d exp(a)/da = exp(a)
    out._a._grad += out.data * out._grad


cdef void _log_backward(Value out) noexcept:      # d log(a)/da = 1 / a
    out._a._grad += out._grad / out._a.data


cdef void _sigmoid_backward(Value out) noexcept:  # d s(a)/da = s(a) (1 - s(a))
    out._a._grad += out.data * (1.0 - out.data) * out._grad


cdef backward_fn _BACKWARD[N_OPS]
_BACKWARD[:] = [_leaf_backward, _add_backward, _sub_backward, _mul_backward, _div_backward,
                _add_k_backward, _mul_k_backward, _k_sub_backward, _k_div_backward,
                _pow_backward, _relu_backward, _tanh_backward, _exp_backward, _log_backward,
                _sigmoid_backward]


# ---- growable arrays of Values: a walk's stack and order, the Values waiting to be freed ------

cdef struct _Buffer:         # references, borrowed (a walk) or owned (_to_free)
    PyObject **items
    Py_ssize_t size
    Py_ssize_t capacity


cdef bint _reserve(_Buffer *buf) noexcept:
    """Room for one more item in buf (realloc'ed twice as large when full); False if no memory."""
    cdef Py_ssize_t capacity
    cdef PyObject **items
    if buf.size < buf.capacity:
        return True
    capacity = max(256, 2 * buf.capacity)
    items = <PyObject **>realloc(buf.items, capacity * sizeof(PyObject *))
    if items == NULL:
        return False
    buf.items = items
    buf.capacity = capacity
    return True


cdef int _push(_Buffer *buf, PyObject *item) except -1:
    if not _reserve(buf):
        raise MemoryError(f"Value: no memory for a list of {buf.size + 1} Values")
    buf.items[buf.size] = item
    buf.size += 1
    return 0


cdef _Buffer _to_free = _Buffer(NULL, 0, 0)  # Values whose last reference __dealloc__ took over
cdef bint _freeing = False                   # a __dealloc__ is emptying _to_free


cdef inline void _defer(PyObject *operand) noexcept:
    """If the Value being freed holds the last reference to `operand` (a Value or None), take a
    reference to it onto _to_free, so that dropping the Value's own reference frees nothing."""
    if operand != <PyObject *>None and Py_REFCNT(operand) == 1 and _reserve(&_to_free):
        _incref(operand)
        _to_free.items[_to_free.size] = operand
        _to_free.size += 1


# ---- topological order --------------------------------------------------------------------

cdef unsigned long long _walks = 0   # how many graph walks have started: each marks its nodes


cdef Py_ssize_t _walk(Value root, _Buffer *order) except -1:
    """Append every Value reachable from root to `order`, each after all the Values it was made
    from (a post-order depth-first search, operands in order; iterative, so any depth works).
    Returns how many of them may have a `_backward` in Python (see _python_backward).

    A node's _mark says how far this walk got with it: below `entered` not reached yet,
    `entered` while its operands are being visited, `done` once it is in `order`. No Python
    code runs here, so the borrowed references stay valid (root keeps the graph alive).
    """
    global _walks
    _walks += 2
    cdef unsigned long long entered = _walks, done = _walks + 1
    cdef _Buffer stack = _Buffer(NULL, 0, 0)
    cdef Value node, child
    cdef Py_ssize_t i, n_python = 0
    try:
        _push(&stack, <PyObject *>root)
        while stack.size > 0:
            node = <Value>stack.items[stack.size - 1]
            if node._mark < entered:        # first visit: its operands go on top, a first
                node._mark = entered
                if node._extra is not None:
                    for i in range(len(node._extra.more) - 1, -1, -1):
                        child = node._extra.more[i]
                        if child._mark < entered:
                            _push(&stack, <PyObject *>child)
                if node._b is not None and node._b._mark < entered:
                    _push(&stack, <PyObject *>node._b)
                if node._a is not None and node._a._mark < entered:
                    _push(&stack, <PyObject *>node._a)
            else:                           # back from its operands (or a duplicate entry)
                stack.size -= 1
                if node._mark == entered:
                    node._mark = done
                    _push(order, <PyObject *>node)
                    if type(node) is not Value or (node._extra is not None
                                                   and node._extra.backward is not None):
                        n_python += 1
    finally:
        free(stack.items)
    return n_python


cdef int _backward_calling_python(_Buffer *order) except -1:
    """backward()'s loop over `order` (from _walk) when some nodes' `_backward` is Python: call
    those, run the others in C. An exception in a `_backward` stops the loop and propagates,
    leaving the grads added so far (as in micrograd); the next backward() starts afresh."""
    cdef Py_ssize_t i
    # Python code may drop the last outside reference to a node: own one to each first
    cdef list nodes = [<Value>order.items[i] for i in range(order.size)]
    cdef Value node
    for node in reversed(nodes):
        fn = _python_backward(node)
        if fn is None:
            _BACKWARD[node._code](node)
        else:
            fn()
    return 0


_BUILTIN = Value.__dict__["_backward"]  # the property, which a subclass may override


cdef object _python_backward(Value node):
    """The function backward() calls at `node`: the one set as its `_backward`, or the
    `_backward` its subclass defines; None where the built-in backward (in C) applies."""
    if node._extra is not None and node._extra.backward is not None:
        return node._extra.backward
    if type(node) is not Value and getattr(type(node), "_backward") is not _BUILTIN:
        return node._backward
    return None


def topological_order(Value root not None):
    """Every Value the graph of `root` reaches, each after the Values it was made from (so the
    list ends with root): the order backward() goes through, reversed."""
    cdef _Buffer order = _Buffer(NULL, 0, 0)
    try:
        _walk(root, &order)
        return [<Value>order.items[i] for i in range(order.size)]
    finally:
        free(order.items)


def _neuron_sum(list w, x, Value start not None):
    """start + w[0]*x[0] + w[1]*x[1] + ...: the nodes `sum((wi*xi for wi, xi in zip(w, x)),
    start)` builds in micrograd's Neuron, without a Python call per op. x: Values or numbers."""
    cdef Py_ssize_t i, n = len(w)
    cdef Value acc = start, wi, product
    cdef double k
    cdef bint is_int
    if len(x) != n:
        raise ValueError(f"Neuron: expected {n} inputs, got {len(x)}")
    for i in range(n):
        wi = w[i]
        xi = x[i]
        if _is_value(xi):
            product = _node(wi.data * (<Value>xi).data, MUL, wi, xi, 0.0, False)
        elif _as_double(xi, &k, &is_int):
            product = _node(wi.data * k, MUL_K, wi, None, k, is_int)
        else:
            raise TypeError(f"Neuron: input {i} must be a Value or a real number, got "
                            f"{type(xi).__name__}: {xi!r}")
        acc = _node(acc.data + product.data, ADD, acc, product, 0.0, False)
    return acc


# ---- where Values live: born untracked, freed onto a free list --------------------------------
# Python's generic allocator hands every new object of a type with a cycle-collector header to
# the collector; a Value is born untracked instead (_keep_track tracks the few that need it),
# which keeps building a graph as fast as when Values had no such header. Up to 16,384 freed
# Values wait in _spare for the next ones. (A subclass's instances use Python's allocator.)

cdef enum:
    N_SPARE = 16384     # a graph of that many Values is rebuilt from the list each step
cdef PyObject *_spare[N_SPARE]
cdef int _n_spare = 0


cdef PyObject *_alloc(PyTypeObject *t, Py_ssize_t n) noexcept:
    global _n_spare
    cdef PyObject *o
    if t != <PyTypeObject *>Value:
        return PyType_GenericAlloc(t, n)
    if _n_spare > 0:
        _n_spare -= 1
        o = _spare[_n_spare]
    else:
        o = _PyObject_GC_New(t)
        if o == NULL:
            return NULL
    memset(<char *>o, 0, t.tp_basicsize)    # tp_new expects zeros, as from PyType_GenericAlloc
    return PyObject_Init(o, t)


cdef void _free(void *o) noexcept:
    global _n_spare
    if Py_TYPE(<PyObject *>o) == <PyTypeObject *>Value and _n_spare < N_SPARE:
        _spare[_n_spare] = <PyObject *>o
        _n_spare += 1
    else:
        PyObject_GC_Del(o)


(<_Slots *>Value).tp_alloc = _alloc
(<_Slots *>Value).tp_free = _free
