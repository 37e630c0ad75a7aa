"""Extending the compiled Value the way micrograd's lecture extends its own: ops of your own (a
node made by `Value(data, children, op)` with a `_backward` function), and subclasses with new
methods. Every number is checked against micrograd 0.1.0 running the same code (and against
PyTorch or the closed form), never against this engine itself.
"""

from __future__ import annotations

import gc
import math
import pickle
import random
import textwrap
import weakref

import micrograd.engine
import micrograd.nn
import pytest
import torch

from tinygrad_conv.scalar import MLP, Value, topological_order

from helpers import run_python

ENGINES = {"ours": Value, "micrograd": micrograd.engine.Value}


# ---- custom ops, written once for both engines, exactly as in micrograd's lecture -------------


def cube(x, value):
    """x**3 as a custom op: d(x^3)/dx = 3 x^2."""
    out = value(x.data ** 3, (x,), "cube")

    def _backward():
        x.grad += 3 * x.data ** 2 * out.grad
    out._backward = _backward
    return out


def smooth_max(a, b, value):
    """log(exp(a) + exp(b)), a two-input custom op: d/da = exp(a) / (exp(a) + exp(b))."""
    ea, eb = math.exp(a.data), math.exp(b.data)
    out = value(math.log(ea + eb), (a, b), "smax")

    def _backward():
        a.grad += ea / (ea + eb) * out.grad
        b.grad += eb / (ea + eb) * out.grad
    out._backward = _backward
    return out


def mixed_graph(value):
    """Custom and built-in nodes in one graph; x, c and m are each used more than once."""
    x, y = value(0.7), value(-1.3)
    c = cube(x, value)
    m = smooth_max(c * y, x + 2, value)
    z = m * x + cube(m, value) - y * c
    return (x, y, c, m), z


def torch_mixed_graph():
    x = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    y = torch.tensor(-1.3, dtype=torch.float64, requires_grad=True)
    c = x ** 3
    m = torch.logsumexp(torch.stack([c * y, x + 2]), 0)
    for t in (c, m):
        t.retain_grad()
    z = m * x + m ** 3 - y * c
    return (x, y, c, m), z


def test_custom_ops_give_micrograds_data_and_grads_and_pytorchs():
    results = {}
    for name, value in ENGINES.items():
        nodes, z = mixed_graph(value)
        z.backward()
        results[name] = [float(n) for v in (*nodes, z) for n in (v.data, v.grad)]
    nodes, z = torch_mixed_graph()
    z.backward()
    by_torch = [n for t in nodes for n in (t.item(), t.grad.item())]
    # the same expressions in the same order: bit for bit, but for the order of the additions
    # into a grad of three or more terms (micrograd's follows memory addresses)
    assert results["ours"] == pytest.approx(results["micrograd"], rel=1e-14, abs=1e-300)
    assert results["ours"][:8] == pytest.approx(by_torch, rel=1e-12)


def test_a_one_input_custom_op_equals_micrograds_bit_for_bit():
    for x0 in (-2.0, 0.3, 1.5):
        got = []
        for value in ENGINES.values():
            x = value(x0)
            out = (cube(x, value) * 2.0).relu() + x
            out.backward()
            got.append((out.data, x.grad))
        assert got[0] == got[1]
        assert got[0][1] == pytest.approx((6 * x0 ** 2 if x0 ** 3 > 0 else 0) + 1)


def test_a_reused_custom_node_adds_up_its_gradients():
    for value in ENGINES.values():
        x = value(1.5)
        c = cube(x, value)
        z = c * c + c      # dz/dc = 2c + 1, three uses of c
        z.backward()
        assert c.grad == 2 * c.data + 1
        assert x.grad == pytest.approx(3 * 1.5 ** 2 * (2 * c.data + 1), rel=1e-15)


def test_repeated_backward_through_a_custom_op_on_a_difference_adds_up_as_in_micrograd():
    # a - b hides micrograd's inner node b*-1, whose grad also adds up across backward() calls;
    # a custom op adding to (a - b).grad must not reset it
    got = {}
    for name, value in ENGINES.items():
        a, b = value(1.25), value(-0.5)
        z = cube(a - b, value) * 3
        grads = []
        for _ in range(3):
            z.backward()
            grads.append((a.grad, b.grad))
        got[name] = grads
    assert got["ours"] == got["micrograd"]


def test_backward_calls_each_custom_backward_once_in_topological_order():
    calls = []
    x = Value(2.0)
    nodes = [x]
    for k in range(4):
        out = Value(nodes[-1].data + 1, (nodes[-1],), f"step{k}")
        out._backward = (lambda k=k, out=out, prev=nodes[-1]: (
            calls.append(k), setattr(prev, "grad", prev.grad + out.grad)))
        nodes.append(out * 1.0)   # a built-in node between each two custom ones
    nodes[-1].backward()
    assert calls == [3, 2, 1, 0] and x.grad == 1.0


def test_a_chain_of_100000_custom_nodes_does_not_recurse():
    x = Value(1.0)
    y = x
    for _ in range(50_000):
        prev = y
        y = Value(prev.data * 1.0, (prev,), "id")
        y._backward = (lambda prev=prev, out=y: setattr(prev, "grad", prev.grad + out.grad))
        y = y + 0.5          # the built-in nodes between them stay in C
    y.backward()
    assert x.grad == 1.0 and y.data == 25_001.0
    assert len(topological_order(y)) == 100_001
    del y, prev
    gc.collect()


# ---- _backward on every node ----------------------------------------------------------------


def test_reading_underscore_backward_of_a_built_in_node_runs_its_step_by_hand():
    a, b = Value(2.0), Value(-3.0)
    c = a * b
    c.grad = 1.0
    step = c._backward
    step()
    assert (a.grad, b.grad) == (-3.0, 2.0)
    step()   # each call adds again, as micrograd's closure does
    assert (a.grad, b.grad) == (-6.0, 4.0)
    a._backward()   # a leaf's step does nothing
    assert (a.grad, b.grad) == (-6.0, 4.0)


def test_stepping_through_backward_by_hand_equals_backward_and_micrograd():
    """micrograd's first lecture: o.grad = 1, then o._backward(), n._backward(), ... by hand."""
    by_hand = {}
    for name, value in ENGINES.items():
        nodes, z = mixed_graph(value)
        z.grad = 1.0
        order = topological_order(z) if value is Value else _micrograd_order(z)
        for node in reversed(order):
            node._backward()
        by_hand[name] = [v.grad for v in nodes]
    nodes, z = mixed_graph(Value)
    z.backward()
    assert by_hand["ours"] == [v.grad for v in nodes]
    assert by_hand["ours"] == pytest.approx(by_hand["micrograd"], rel=1e-14)


def _micrograd_order(root):
    topo, seen = [], set()

    def build(v):
        if v not in seen:
            seen.add(v)
            for child in v._prev:
                build(child)
            topo.append(v)
    build(root)
    return topo


def test_underscore_backward_reads_back_the_function_set_and_del_restores_the_built_in():
    a, b = Value(2.0), Value(5.0)
    c = a * b

    def straight_through():     # replaces the product's own backward, as in micrograd
        a.grad += c.grad
    c._backward = straight_through
    assert c._backward is straight_through
    (c + 1).backward()
    assert (a.grad, b.grad) == (1.0, 0.0)
    del c._backward
    top = c + 1
    for v in topological_order(top):
        v.grad = 0
    top.backward()
    assert (a.grad, b.grad) == (5.0, 2.0)


def test_replacing_a_built_in_backward_gives_micrograds_grads():
    def half_product(value):
        a, b = value(2.0), value(5.0)
        c = a * b

        def half():
            a.grad += 0.5 * b.data * c.grad
            b.grad += 0.5 * a.data * c.grad
        c._backward = half
        (c * c).backward()
        return a.grad, b.grad
    assert half_product(Value) == half_product(micrograd.engine.Value) == (50.0, 20.0)


@pytest.mark.parametrize("fn", [None, 3, "x.grad += 1", Value(1.0).data])
def test_a_non_callable_underscore_backward_is_a_type_error_naming_it(fn):
    v = Value(1.0, (Value(2.0),), "f")
    with pytest.raises(TypeError, match=r"Value\._backward must be a function"):
        v._backward = fn
    v.grad = 1.0
    v.backward()   # still the built-in (a leaf's: nothing)


def test_an_exception_in_a_backward_propagates_and_the_next_backward_works():
    x = Value(2.0)
    out = Value(x.data ** 3, (x,), "cube")

    def broken():
        raise RuntimeError("forgot the chain rule")
    out._backward = broken
    z = out * 3 + x
    with pytest.raises(RuntimeError, match="forgot the chain rule"):
        z.backward()
    # the nodes after out in backward's order ran, as in micrograd; nothing below it did
    assert (out.grad, x.grad) == (3.0, 1.0)

    def fixed():
        x.grad += 3 * x.data ** 2 * out.grad
    out._backward = fixed
    for v in topological_order(z):
        v.grad = 0
    z.backward()
    assert x.grad == 3 * 3 * 2.0 ** 2 + 1


def test_a_backward_that_takes_arguments_fails_clearly_when_called():
    x = Value(2.0)
    out = Value(4.0, (x,), "sq")
    out._backward = lambda grad: None   # micrograd's closures take no argument
    with pytest.raises(TypeError, match="argument"):
        out.backward()


def test_grad_is_settable_and_adds_up_from_python():
    v = Value(1.0)
    v.grad += 2.5
    v.grad += 1
    assert v.grad == 3.5 and type(v.grad) is float
    with pytest.raises(TypeError):
        v.grad = "1"


# ---- subclasses -----------------------------------------------------------------------------


class CubeValue(Value):
    """A Value with a method of its own, as a learner adds one in micrograd's exercises."""

    def cube(self):
        return cube(self, Value)


class MicrogradCubeValue(micrograd.engine.Value):
    def cube(self):
        return cube(self, micrograd.engine.Value)


def test_a_subclass_method_through_a_small_mlp_equals_micrograd():
    grads, losses = {}, {}
    for name, (value, mlp) in {"ours": (CubeValue, MLP),
                               "micrograd": (MicrogradCubeValue, micrograd.nn.MLP)}.items():
        random.seed(7)
        model = mlp(2, [4, 4, 1])
        xs = [value(0.4), value(-0.9)]
        out = model([x.cube() for x in xs])
        loss = smooth_max(out, out * -1.0, micrograd.engine.Value if name != "ours" else Value)
        model.zero_grad()
        loss.backward()
        losses[name] = loss.data
        grads[name] = [p.grad for p in model.parameters()] + [x.grad for x in xs]
    assert losses["ours"] == losses["micrograd"]
    assert grads["ours"] == pytest.approx(grads["micrograd"], rel=1e-13, abs=1e-300)
    assert any(g != 0 for g in grads["ours"][-2:])


def test_built_in_ops_on_subclass_instances_return_plain_values_as_in_micrograd():
    a, b = CubeValue(2.0), CubeValue(3.0)
    results = [a * b, a + Value(1.0), Value(1.0) - a, 2 * a, a / 4, -a, a ** 2, a.tanh(),
               a.cube()]
    assert all(type(r) is Value for r in results)
    assert [r.data for r in results[:-1]] == [6.0, 3.0, -1.0, 4.0, 0.5, -2.0, 4.0, math.tanh(2)]
    (a * b + a).backward()
    assert (a.grad, b.grad) == (4.0, 2.0)


def test_a_method_assigned_to_a_subclass_works_and_the_base_stays_sealed():
    class MyValue(Value):
        pass

    def softplus(self):
        e = math.exp(self.data)
        out = Value(math.log1p(e), (self,), "softplus")

        def _backward():
            self.grad += e / (1 + e) * out.grad
        out._backward = _backward
        return out
    MyValue.softplus = softplus
    x = MyValue(0.5)
    y = x.softplus()
    y.backward()
    assert y._op == "softplus" and x.grad == pytest.approx(1 / (1 + math.exp(-0.5)), rel=1e-15)
    with pytest.raises(TypeError):
        Value.softplus = softplus   # the compiled class takes no new methods: subclass it


def test_subclass_instances_take_attributes_and_init_arguments():
    class Named(Value):
        def __init__(self, data, name):
            super().__init__(data, label=name)
            self.name = name
    v = Named(1.5, "w")
    v.note = "a weight"
    assert (v.data, v.label, v.name, v.note) == (1.5, "w", "w", "a weight")
    (v * v).backward()
    assert v.grad == 3.0


def test_a_subclass_may_define_underscore_backward_as_a_method():
    class Cube(Value):
        def __init__(self, x):
            super().__init__(x.data ** 3, (x,), "cube")
            self.x = x

        def _backward(self):
            self.x.grad += 3 * self.x.data ** 2 * self.grad

    x = Value(-1.5)
    z = Cube(x) * 2 + x
    z.backward()
    assert x.grad == 2 * 3 * 1.5 ** 2 + 1


def test_a_subclass_instance_pickles_with_its_type_and_attributes():
    v = CubeValue(2.5, label="v")
    v.note = [1, 2]
    w = pickle.loads(pickle.dumps(v * v + v))
    (leaf,) = {c for c in topological_order(w) if type(c) is CubeValue}
    assert (leaf.data, leaf.label, leaf.note, w.data) == (2.5, "v", [1, 2], 8.75)


def test_a_custom_node_with_a_closure_cannot_be_pickled_but_says_why():
    x = Value(2.0)
    with pytest.raises((pickle.PicklingError, AttributeError), match="_backward|local"):
        pickle.dumps(cube(x, Value))


# ---- memory: cycles through Python objects are collected, built-in graphs stay untracked ------


def test_only_values_that_can_be_in_a_cycle_are_tracked_by_the_collector():
    x = Value(2.0)
    built_in = (x * 3 + 1).tanh()
    custom = cube(x, Value)
    later = custom * 2 + x
    assert not gc.is_tracked(x) and not gc.is_tracked(built_in)
    assert gc.is_tracked(custom) and gc.is_tracked(later)   # later reaches custom's closure
    assert gc.is_tracked(CubeValue(1.0))


def test_values_made_without_init_are_tracked_when_they_need_to_be():
    bare = Value.__new__(Value)
    assert not gc.is_tracked(bare) and bare.data == 0.0 and bare._op == ""
    bare._backward = lambda: None
    assert gc.is_tracked(bare)
    sub = CubeValue.__new__(CubeValue)    # a subclass instance, its __init__ never run
    assert gc.is_tracked(sub) and gc.is_tracked(sub * 2) and gc.is_tracked(Value(1.0) + sub)


def test_a_custom_node_whose_closure_refers_to_it_is_collected():
    class Witness:
        pass

    def graph(x):
        witness = Witness()
        out = Value(8.0, (x,), "cube")

        def _backward():   # out -> _backward -> out: a cycle, as in every micrograd node
            x.grad += 3 * x.data ** 2 * out.grad + 0 * len([witness])
        out._backward = _backward
        (out * 2).backward()
        return weakref.ref(witness)   # witness lives as long as the closure

    x = Value(2.0)
    alive = graph(x)
    gc.collect()
    assert alive() is None and x.grad == 24.0


def test_a_cycle_through_a_subclass_instance_is_collected():
    x = CubeValue(1.0)
    x.parent = (x * 2).tanh()   # x -> __dict__ -> parent -> ... -> x
    x.self_ref = x
    alive = weakref.ref(x)
    del x
    gc.collect()
    assert alive() is None


def test_collecting_often_while_building_and_backpropagating_mixed_graphs_never_crashes():
    code = textwrap.dedent("""
        import gc, math, random
        from tinygrad_conv.scalar import MLP, Value
        gc.set_threshold(5, 2, 2)     # collect all the time: any wrong traverse would show
        class Sub(Value):
            def cube(self):
                out = Value(self.data ** 3, (self,), "cube")
                def _backward():
                    self.grad += 3 * self.data ** 2 * out.grad
                out._backward = _backward
                return out
        random.seed(0)
        model = MLP(3, [8, 1])
        total = 0.0
        for step in range(200):
            xs = [Sub(random.uniform(-1, 1)) for _ in range(3)]
            for x in xs:
                x.me = x                       # cycles through the subclass instances
            out = model([x.cube() for x in xs])
            loss = (out * out).tanh() + xs[0].cube()
            holder = Value(loss.data, (loss,), "hold")
            holder._backward = lambda: setattr(loss, "grad", loss.grad + holder.grad)
            model.zero_grad()
            holder.backward()
            total += sum(abs(x.grad) for x in xs)
            if step % 50 == 0:
                gc.collect()
        del xs, out, loss, holder, x
        gc.collect()
        print("ok", math.isfinite(total), sum(type(o) is Sub for o in gc.get_objects()))
    """)
    assert run_python(["-c", code], timeout=300).stdout == "ok True 0\n"
