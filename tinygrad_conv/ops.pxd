# Declarations Cython uses when it compiles ops.py (setup.py): the helpers every op's backward
# calls become C calls. ops.py stays the source; TINYGRAD_CONV_PURE_PYTHON=1 runs it uncompiled.

cpdef object unbroadcast(object grad, tuple shape)
cdef object _zero(object dtype)
cdef dict _ZEROS
