# Declarations Cython uses when it compiles tensor.py (setup.py): its helpers become C calls.
# tensor.py stays the source; TINYGRAD_CONV_PURE_PYTHON=1 runs it uncompiled.

cdef object _fill(object t, object data, object ctx, object version)
