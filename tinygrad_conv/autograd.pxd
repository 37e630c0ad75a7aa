# Declarations Cython uses when it compiles autograd.py (setup.py): the spine's helpers become C
# calls. autograd.py stays the source; TINYGRAD_CONV_PURE_PYTHON=1 runs it uncompiled.

cpdef object _node_of(object t)
cdef object _record(object ctx, tuple tensors)
cdef list _call_backward(object ctx, object grad_out, bint retain_graph)
cdef object _accumulate(object leaf, object grad)
cdef list _checked_gradients(object ctx, object grads)
cdef tuple _saved_versions(tuple tensors, object saved)
cdef object _check_saved(object ctx)
cdef object _release(object ctx)
cdef object _viewed_version(object data, tuple tensors)

cdef class GraphNode:
    cdef public object _ctx, shape, dtype, _tensor, retains_grad, _hooks
    cdef object __weakref__

cdef class ConstantNode(GraphNode):
    pass

cdef class Function:
    cdef public object parents, needs_input_grad, saved_values, saved_versions, released
    cdef public object created_at
