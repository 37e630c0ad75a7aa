"""Pictures of the graph: which ops made a tensor, from what, with which shapes and gradients.

    dot_text = viz.to_dot(loss, names=dict(model.named_parameters()))
    viz.draw(loss, "graph.svg")        # needs Graphviz's `dot`; else writes graph.dot

One node per tensor, an arrow from each input to the tensor an op made from it (the direction the
data flows; backward walks the arrows the other way). A node shows the op that made the tensor
(or, for a leaf, its name or "input"/"leaf"), its shape and dtype, and |grad|, the L2 norm of its
gradient, once backward has run. As in PyTorch, only leaves keep their gradient, so only leaves
show one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tinygrad_conv.tensor import Tensor

__all__ = ["draw", "graph_nodes", "to_dot"]

_FORMATS = (".svg", ".png", ".pdf")
# fill colours: made by an op, a leaf that learns (a parameter), a leaf that does not (data)
_COLOURS = {"op": "#dbe9f6", "param": "#fde9c9", "data": "#eeeeee"}


def graph_nodes(tensor: Tensor) -> list[Tensor]:
    """Every tensor the graph of `tensor` reaches through the ops' inputs, inputs before outputs
    (so the list ends with `tensor`). Iterative: a deep graph needs no deep recursion."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"viz: expected a Tensor, got {type(tensor).__name__}")
    return tensor._topological_order(every_input=True)


def to_dot(tensor: Tensor, names: Mapping[str, Tensor] | None = None) -> str:
    """Graphviz DOT text of the graph that produced `tensor`.

    names: optional {name: tensor} (e.g. `dict(model.named_parameters())`) to label leaves.
    Node ids are t0, t1, ... in `graph_nodes` order, so the text is the same on every run.
    """
    if names is not None and not isinstance(names, Mapping):
        raise TypeError(f"to_dot: names must be a mapping of name to Tensor, got "
                        f"{type(names).__name__}")
    label_of = {id(t): name for name, t in (names or {}).items()}
    nodes = graph_nodes(tensor)
    node_id = {id(t): f"t{i}" for i, t in enumerate(nodes)}

    lines = [
        "digraph tinygrad_conv {",
        '    graph [rankdir=TB, fontname="Helvetica"];',
        '    node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11];',
        '    edge [color="#555555"];',
    ]
    for t in nodes:
        kind = "op" if t._ctx is not None else "param" if t.requires_grad else "data"
        border = ', penwidth=2, color="#c0392b"' if t is tensor else ""
        lines.append(f'    {node_id[id(t)]} [label="{_escape(_label(t, label_of))}", '
                     f'fillcolor="{_COLOURS[kind]}"{border}];')
    for t in nodes:
        if t._ctx is not None:
            for parent in t._ctx.parents:
                lines.append(f"    {node_id[id(parent)]} -> {node_id[id(t)]};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _label(t: Tensor, label_of: dict[int, str]) -> str:
    """Three or four lines: what made it, shape, dtype, |grad| when there is a gradient."""
    if t._ctx is not None:
        title = type(t._ctx).__name__
    else:
        title = label_of.get(id(t), "leaf" if t.requires_grad else "input")
    lines = [title, str(tuple(t.shape)), str(t.dtype)]
    if t.grad is not None:
        norm = float(np.linalg.norm(np.asarray(t.grad, dtype=np.float64)))
        lines.append(f"|grad| = {norm:.4g}")
    return "\n".join(lines)


def _escape(text: str) -> str:
    """A DOT double-quoted string: escape backslashes and quotes, newlines as \\n."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def draw(tensor: Tensor, path: str | os.PathLike,
         names: Mapping[str, Tensor] | None = None) -> Path:
    """Write the graph of `tensor` to `path` (.svg, .png or .pdf via Graphviz, or .dot).

    Without Graphviz's `dot` program the DOT text goes to `path` with the suffix .dot instead,
    and a message on stderr says how to render it. Returns the path written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (*_FORMATS, ".dot"):
        raise ValueError(f"draw: path {str(path)!r} must end in .svg, .png, .pdf or .dot")
    text = to_dot(tensor, names)
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
