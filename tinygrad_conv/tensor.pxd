# Declarations Cython uses when it compiles tensor.py (setup.py): the Tensor becomes an extension
# type (its fields, autograd.TensorFields, C struct fields), its helpers C calls. tensor.py stays
# the source; TINYGRAD_CONV_PURE_PYTHON=1 runs it uncompiled.

from tinygrad_conv.autograd cimport TensorFields

cdef class Tensor(TensorFields):
    pass

cdef object _fill(Tensor t, object data, object ctx, object version)
cdef object _binary(object op, str name, Tensor tensor, object other, bint reverse=*,
                    bint division=*)
cdef Tensor _cast(Tensor t, object dtype)
