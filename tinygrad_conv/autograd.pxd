# Declarations Cython uses when it compiles autograd.py (setup.py): the spine's helpers become C
# calls, the graph's records C structs. autograd.py stays the source; TINYGRAD_CONV_PURE_PYTHON=1
# runs it uncompiled.

cimport cython

cdef class GraphNode:
    cdef public object _ctx, shape, dtype, _tensor, retains_grad, _hooks
    cdef object __weakref__

cdef class ConstantNode(GraphNode):
    pass

cdef class TensorFields:
    cdef public object data, grad, requires_grad, _ctx, _node, _hooks, _version_counter
    cdef object __weakref__

cdef class Function:
    cdef public tuple parents, needs_input_grad, saved_values, saved_versions
    cdef public object released, created_at

cdef Py_ssize_t _open_blocks
cpdef bint is_grad_enabled()
cdef bint _anomaly_enabled()

@cython.locals(order=list, visited=set, emitted=set, stack=list, ctx=Function)
cpdef list topological_order(root, bint every_input=*)
cpdef object _node_of(TensorFields t)
cdef object _record(Function ctx, tuple tensors)
cdef list _call_backward(Function ctx, object grad_out, bint retain_graph)
cdef object _accumulate(TensorFields leaf, object grad, bint sole)
@cython.locals(parents=tuple, checked=list)
cdef list _checked_gradients(Function ctx, object grads)
@cython.locals(t=TensorFields)
cdef tuple _saved_versions(tuple tensors, tuple saved)
cdef bint _saves_memory_of(tuple saved, object data)
cdef object _check_saved(Function ctx)
cdef object _release(Function ctx)
@cython.locals(t=TensorFields)
cdef object _viewed_version(object data, tuple tensors)
