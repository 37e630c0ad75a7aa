"""Pictures of the graph: which ops made a tensor, from what, with which shapes and gradients.

    dot_text = viz.to_dot(loss, names=dict(model.named_parameters()))
    viz.draw(loss, "graph.svg")        # needs Graphviz's `dot`; else writes graph.dot
    viz.draw(loss, "graph.svg", values=True)   # small gradients and inputs in full, too
    viz.draw(value, "graph.svg")       # a scalar Value's graph: label (op), data, grad

One node per tensor, an arrow from each input to the tensor an op made from it (the direction the
data flows; backward walks the arrows the other way). A node shows the op that made the tensor
(or, for a leaf, its name or "input"/"leaf", and "constant" for a number in the code such as the
2 of `x * 2`, with its value), its shape and dtype, and |grad|, the L2 norm of its gradient, once
backward has run. As in PyTorch, leaves keep their gradient and so does any tensor that called
`retain_grad()` (while the tensor is alive): those nodes show it, the others do not. With
values=True an array of at most 16 elements is also shown in full: the gradient beside its norm,
and the values of an input that needs no gradient (while its tensor is alive: the graph does not
keep them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tinygrad_conv.scalar import Value, topological_order
from tinygrad_conv.tensor import Tensor

__all__ = ["draw", "graph_nodes", "to_dot"]

_FORMATS = (".svg", ".png", ".pdf")
# fill colours: made by an op, a leaf that learns (a parameter), a leaf that does not (data)
_SMALL = 16  # values=True prints arrays of at most this many elements
_COLOURS = {"op": "#dbe9f6", "param": "#fde9c9", "data": "#eeeeee"}
_HEADER = (
    "digraph tinygrad_conv {",
    '    graph [rankdir=TB, fontname="Helvetica"];',
    '    node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11];',
    '    edge [color="#555555"];',
)


def graph_nodes(tensor: Tensor | Value) -> list[Tensor] | list[Value]:
    """Every tensor the graph of `tensor` reaches through the ops' inputs, inputs before outputs
    (so the list ends with `tensor`). Iterative: a deep graph needs no deep recursion.
    The same for a scalar Value: the Values it was computed from."""
    if isinstance(tensor, Value):
        return topological_order(tensor)
    if not isinstance(tensor, Tensor):
        raise TypeError(f"viz: expected a Tensor or a Value, got {type(tensor).__name__}")
    return tensor._topological_order(every_input=True)


def to_dot(tensor: Tensor | Value, names: Mapping[str, Tensor | Value] | None = None, *,
           values: bool = False) -> str:
    """Graphviz DOT text of the graph that produced `tensor`.

    names: optional {name: tensor} (e.g. `dict(model.named_parameters())`) to label leaves.
    values: also show arrays of at most 16 elements in full (gradients, inputs' values).
    Node ids are t0, t1, ... in `graph_nodes` order, so the text is the same on every run.
    For a scalar Value each node shows its name (names, else its label) and op, data and grad;
    ids are v0, v1, ...
    """
    if not isinstance(values, bool):
        raise TypeError(f"to_dot: values must be a bool, got {values!r}")
    if names is not None and not isinstance(names, Mapping):
        raise TypeError(f"to_dot: names must be a mapping of name to Tensor, got "
                        f"{type(names).__name__}")
    if isinstance(tensor, Value):
        return _value_to_dot(tensor, names)  # a Value's data and grad are numbers: always shown
    label_of = {id(t): name for name, t in (names or {}).items()}
    nodes = graph_nodes(tensor)
    node_id = {id(t): f"t{i}" for i, t in enumerate(nodes)}

    lines = list(_HEADER)
    for t in nodes:
        kind = "op" if t._ctx is not None else "param" if t.requires_grad else "data"
        border = ', penwidth=2, color="#c0392b"' if t is tensor else ""
        lines.append(f'    {node_id[id(t)]} [label="{_escape(_label(t, label_of, values))}", '
                     f'fillcolor="{_COLOURS[kind]}"{border}];')
    for t in nodes:
        if t._ctx is not None:
            for parent in t._ctx.parents:
                lines.append(f"    {node_id[id(parent)]} -> {node_id[id(t)]};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _label(t: Tensor, label_of: dict[int, str], values: bool) -> str:
    """What made it (or its name), shape, dtype; a constant's value; |grad| when there is a
    gradient; with values, small arrays in full."""
    if t._ctx is not None:
        title = type(t._ctx).__name__
    else:
        title = label_of.get(id(t), "leaf" if t.requires_grad else
                             "constant" if not t.shape else "input")
    lines = [title, str(tuple(t.shape)), str(t.dtype)]
    data = _values_if_kept(t) if not t.requires_grad and (values or not t.shape) else None
    if data is not None and data.size <= _SMALL:
        lines.append(f"value = {_array_text(data)}")
    if t.grad is not None:
        grad = np.asarray(t.grad, dtype=np.float64)
        lines.append(f"|grad| = {float(np.linalg.norm(grad)):.4g}")
        if values and grad.size <= _SMALL:
            lines.append(f"grad = {_array_text(grad)}")
    return "\n".join(lines)


def _values_if_kept(t) -> np.ndarray | None:
    """An input's values while its tensor is alive (the graph keeps only shape and dtype)."""
    try:
        return np.asarray(t.data)
    except RuntimeError:
        return None


def _array_text(array: np.ndarray) -> str:
    """The values with 4 significant digits: a number bare, an array in brackets, row by row."""
    if array.ndim == 0:
        return f"{array.item():.4g}"
    return np.array2string(array, separator=", ", formatter={"all": lambda v: f"{v:.4g}"})


def _value_to_dot(root: Value, names: Mapping[str, Value] | None) -> str:
    """The DOT text of a scalar graph: one node per Value (its label or op, data and grad), an
    arrow from each operand (twice for x * x), ids v0, v1, ... in topological order."""
    label_of = {id(v): name for name, v in (names or {}).items()}
    nodes = topological_order(root)
    node_id = {id(v): f"v{i}" for i, v in enumerate(nodes)}
    lines = list(_HEADER)
    for v in nodes:
        name = label_of.get(id(v), v.label)
        title = f"{name} ({v._op})" if name and v._op else name or v._op or "leaf"
        text = f"{title}\ndata {v.data:.4g}\ngrad {v.grad:.4g}"
        kind = "op" if v._op else "param"
        border = ', penwidth=2, color="#c0392b"' if v is root else ""
        lines.append(f'    {node_id[id(v)]} [label="{_escape(text)}", '
                     f'fillcolor="{_COLOURS[kind]}"{border}];')
    for v in nodes:
        for child in v._children:
            lines.append(f"    {node_id[id(child)]} -> {node_id[id(v)]};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    """A DOT double-quoted string: escape backslashes and quotes, newlines as \\n."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def draw(tensor: Tensor | Value, path: str | os.PathLike,
         names: Mapping[str, Tensor | Value] | None = None, *, values: bool = False) -> Path:
    """Write the graph of `tensor` (or of a scalar Value) to `path` (.svg, .png or .pdf via
    Graphviz, or .dot).

    Without Graphviz's `dot` program the DOT text goes to `path` with the suffix .dot instead,
    and a message on stderr says how to render it. Returns the path written. names and values
    as in `to_dot`.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (*_FORMATS, ".dot"):
        raise ValueError(f"draw: path {str(path)!r} must end in .svg, .png, .pdf or .dot")
    text = to_dot(tensor, names, values=values)
    dot = shutil.which("dot") if suffix != ".dot" else None
    if dot is None:
        dot_path = path.with_suffix(".dot")
        dot_path.write_text(text)
        if suffix != ".dot":
            print(f"draw: Graphviz's `dot` program was not found, so the graph was written as "
                  f"DOT text to {dot_path}. Install Graphviz (apt-get install graphviz, brew "
                  f"install graphviz, or graphviz.org) and render it with:\n"
                  f"    dot -T{suffix[1:]} {dot_path} -o {path}", file=sys.stderr)
        return dot_path
    result = subprocess.run([dot, f"-T{suffix[1:]}", "-o", str(path)], input=text.encode(),
                            capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"draw: `dot -T{suffix[1:]}` failed with exit code "
                           f"{result.returncode}: {result.stderr.decode(errors='replace')}")
    return path
