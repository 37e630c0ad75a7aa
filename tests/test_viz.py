"""viz.to_dot / viz.draw on a real CNN loss: the nodes, the edges and the labels, checked
against the network's structure and PyTorch's gradients; draw with and without Graphviz."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import tinygrad_conv.functional as F
from tinygrad_conv import Tensor, viz

NODE = re.compile(r'^\s*(t\d+) \[label="((?:[^"\\]|\\.)*)"', re.M)
EDGE = re.compile(r"^\s*(t\d+) -> (t\d+);", re.M)


def parse(dot: str) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    """{node id: label lines} and [(from id, to id)] of DOT text written by to_dot."""
    nodes = {nid: label.split("\\n") for nid, label in NODE.findall(dot)}
    return nodes, EDGE.findall(dot)


def small_cnn(dtype=np.float32):
    """conv(1->3, 3x3) -> relu -> maxpool 2 -> flatten -> linear(27->4) -> cross-entropy, in
    ours and in torch with the same weights. Returns (loss, torch loss, params, torch params)."""
    rng = np.random.default_rng(0)
    arrays = {
        "x": rng.standard_normal((2, 1, 8, 8)),
        "conv.weight": rng.standard_normal((3, 1, 3, 3)) * 0.5,
        "conv.bias": rng.standard_normal(3) * 0.1,
        "fc.weight": rng.standard_normal((4, 27)) * 0.2,
        "fc.bias": rng.standard_normal(4) * 0.1,
    }
    arrays = {k: v.astype(dtype) for k, v in arrays.items()}
    y = np.array([1, 3])

    ours = {k: Tensor(v, dtype=dtype, requires_grad=k != "x") for k, v in arrays.items()}
    h = F.max_pool2d(F.conv2d(ours["x"], ours["conv.weight"], ours["conv.bias"]).relu(), 2)
    loss = F.cross_entropy(F.linear(h.flatten(1), ours["fc.weight"], ours["fc.bias"]), y)

    theirs = {k: torch.tensor(v, requires_grad=k != "x") for k, v in arrays.items()}
    th = torch.max_pool2d(torch.conv2d(theirs["x"], theirs["conv.weight"],
                                       theirs["conv.bias"]).relu(), 2)
    t_loss = torch.nn.functional.cross_entropy(
        torch.nn.functional.linear(th.flatten(1), theirs["fc.weight"], theirs["fc.bias"]),
        torch.tensor(y))
    params = {k: v for k, v in ours.items() if k != "x"}
    return loss, t_loss, params, theirs


def test_cnn_graph_has_one_node_per_tensor_and_an_edge_per_op_input():
    loss, _, params, _ = small_cnn()
    nodes, edges = parse(viz.to_dot(loss, params))
    titles = {nid: lines[0] for nid, lines in nodes.items()}
    # x, 4 parameters, and the ops: Conv2d ReLU MaxPool2d Reshape Linear LogSoftmax NLLLoss
    assert len(nodes) == 12
    assert sorted((titles[a], titles[b]) for a, b in edges) == sorted([
        ("input", "Conv2d"), ("conv.weight", "Conv2d"), ("conv.bias", "Conv2d"),
        ("Conv2d", "ReLU"), ("ReLU", "MaxPool2d"), ("MaxPool2d", "Reshape"),
        ("Reshape", "Linear"), ("fc.weight", "Linear"), ("fc.bias", "Linear"),
        ("Linear", "LogSoftmax"), ("LogSoftmax", "NLLLoss"),
    ])
    # inputs come before the ops that use them, and the loss is the last node
    assert all(int(a[1:]) < int(b[1:]) for a, b in edges)
    assert titles[f"t{len(nodes) - 1}"] == "NLLLoss"


def test_cnn_graph_labels_show_shape_and_dtype():
    loss, t_loss, params, _ = small_cnn(np.float64)
    nodes, _ = parse(viz.to_dot(loss, params))
    by_title = {lines[0]: lines[1:] for lines in nodes.values()}
    assert by_title["input"] == ["(2, 1, 8, 8)", "float64"]
    assert by_title["Conv2d"] == ["(2, 3, 6, 6)", "float64"]
    assert by_title["MaxPool2d"] == ["(2, 3, 3, 3)", "float64"]
    assert by_title["Reshape"] == ["(2, 27)", "float64"]
    assert by_title["NLLLoss"] == [str(tuple(t_loss.shape)), "float64"]
    assert by_title["conv.bias"] == ["(3,)", "float64"]


def test_labels_show_gradient_norms_matching_pytorch_after_backward():
    loss, t_loss, params, theirs = small_cnn(np.float64)
    before, _ = parse(viz.to_dot(loss, params))
    assert not any(line.startswith("|grad|") for lines in before.values() for line in lines)

    loss.backward()
    t_loss.backward()
    nodes, _ = parse(viz.to_dot(loss, params))
    shown = {lines[0]: float(lines[3].removeprefix("|grad| = "))
             for lines in nodes.values() if len(lines) == 4}
    assert set(shown) == set(params)  # only leaves keep a gradient, as in PyTorch
    for name, value in shown.items():
        expected = float(theirs[name].grad.norm())
        assert value == pytest.approx(expected, rel=1e-3), name


def test_an_input_used_twice_is_one_node_with_two_edges():
    x = Tensor([1.0, 2.0], requires_grad=True)
    nodes, edges = parse(viz.to_dot(x * x))
    assert len(nodes) == 2
    assert edges == [("t0", "t1"), ("t0", "t1")]
    assert nodes["t0"][0] == "leaf" and nodes["t1"][0] == "Mul"


def test_a_tensor_without_graph_is_a_single_node():
    nodes, edges = parse(viz.to_dot(Tensor(np.zeros((2, 3), np.float32))))
    assert nodes == {"t0": ["input", "(2, 3)", "float32"]} and edges == []


def test_a_deep_chain_needs_no_recursion():
    x = Tensor(1.0, requires_grad=True)
    y = x
    for _ in range(5000):
        y = y + 1.0
    nodes, edges = parse(viz.to_dot(y))
    assert len(nodes) == 1 + 2 * 5000 and len(edges) == 2 * 5000  # each Add has a constant


def test_names_with_quotes_are_escaped():
    w = Tensor([1.0], requires_grad=True)
    nodes, _ = parse(viz.to_dot(w * 2.0, {'say "hi"': w}))
    assert nodes["t0"][0] == 'say \\"hi\\"'


def test_to_dot_rejects_what_is_not_a_tensor():
    with pytest.raises(TypeError, match="expected a Tensor or a Value, got ndarray"):
        viz.to_dot(np.zeros(3))
    with pytest.raises(TypeError, match="names must be a mapping"):
        viz.to_dot(Tensor([1.0]), names=["w"])


def test_draw_without_graphviz_writes_the_dot_file_and_says_how_to_render(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    loss, _, params, _ = small_cnn()
    written = viz.draw(loss, tmp_path / "cnn.svg", params)
    assert written == tmp_path / "cnn.dot"
    assert written.read_text() == viz.to_dot(loss, params)
    assert not (tmp_path / "cnn.svg").exists()
    message = capsys.readouterr().err
    assert "not found" in message
    assert f"dot -Tsvg {tmp_path / 'cnn.dot'} -o {tmp_path / 'cnn.svg'}" in message


def test_draw_to_a_dot_path_writes_dot_text_without_graphviz(tmp_path, capsys):
    loss, _, _, _ = small_cnn()
    assert viz.draw(loss, tmp_path / "g.dot").read_text() == viz.to_dot(loss)
    assert capsys.readouterr().err == ""


def test_draw_rejects_an_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"must end in \.svg, \.png, \.pdf or \.dot"):
        viz.draw(Tensor([1.0]), tmp_path / "graph.jpg")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_draw_with_graphviz_writes_svg_and_png(tmp_path):
    loss, _, params, _ = small_cnn()
    loss.backward()
    svg = viz.draw(loss, tmp_path / "cnn.svg", params)
    text = svg.read_text()
    assert "<svg" in text and text.count('class="node"') == 12 and "Conv2d" in text
    png = viz.draw(loss, tmp_path / "cnn.png", params)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(sys.platform == "win32", reason="the fake dot is a shell script")
def test_draw_reports_a_failing_dot(tmp_path, monkeypatch):
    fake = tmp_path / "dot"
    fake.write_text("#!/bin/sh\necho 'syntax error in line 1' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(shutil, "which", lambda name: str(fake))
    with pytest.raises(RuntimeError, match="exit code 3: syntax error in line 1"):
        viz.draw(Tensor([1.0]), tmp_path / "g.svg")


def test_dot_text_parses_with_graphviz_when_installed():
    dot = shutil.which("dot")
    if dot is None:
        pytest.skip("Graphviz's dot is not installed")
    loss, _, params, _ = small_cnn()
    out = subprocess.run([dot, "-Tcanon"], input=viz.to_dot(loss, params).encode(),
                         capture_output=True, check=True)
    assert out.stdout.decode().count("->") == 11


def small_graph_with_torch():
    """y = relu((x * 2) * m).sum() with h = x * 2 retained, in ours and in torch, after
    backward. Returns (y, x, h, m, torch x, torch h)."""
    x = Tensor([[1.0, -2.0], [3.0, 4.0]], dtype=np.float64, requires_grad=True)
    m = Tensor([0.5, 1.0], dtype=np.float64)
    h = x * 2.0
    h.retain_grad()
    y = (h * m).relu().sum()
    y.backward()
    tx = torch.tensor(x.numpy(), requires_grad=True)
    th = tx * 2.0
    th.retain_grad()
    (th * torch.tensor(m.numpy())).relu().sum().backward()
    return y, x, h, m, tx, th


def test_a_retained_intermediate_shows_its_gradient_norm_like_a_leaf():
    y, x, h, m, tx, th = small_graph_with_torch()  # h kept: the graph holds it weakly
    nodes, _ = parse(viz.to_dot(y))
    grads = {lines[0]: float(lines[3].removeprefix("|grad| = "))
             for lines in nodes.values() if len(lines) > 3 and lines[3].startswith("|grad|")}
    assert set(grads) == {"leaf", "Mul"}  # x and the retained h; the second Mul is not kept
    assert grads["leaf"] == pytest.approx(float(tx.grad.norm()), rel=1e-3)
    assert grads["Mul"] == pytest.approx(float(th.grad.norm()), rel=1e-3)


def test_a_number_in_the_code_is_a_constant_node_showing_its_value():
    y, *_ = small_graph_with_torch()
    nodes, _ = parse(viz.to_dot(y))
    constants = [lines for lines in nodes.values() if lines[0] == "constant"]
    assert constants == [["constant", "()", "float64", "value = 2"]]


def test_values_shows_small_gradients_and_inputs_in_full():
    y, x, h, m, tx, th = small_graph_with_torch()
    nodes, _ = parse(viz.to_dot(y, values=True))
    by_title = {}
    for lines in nodes.values():
        by_title.setdefault(lines[0], []).append(lines)
    (leaf,) = by_title["leaf"]
    assert leaf[4:] == ["grad = [[1, 0],", " [1, 2]]"]
    assert np.array_equal(tx.grad.numpy(), [[1, 0], [1, 2]])
    retained = [lines for lines in by_title["Mul"] if len(lines) > 3]
    assert retained == [["Mul", "(2, 2)", "float64", f"|grad| = {float(th.grad.norm()):.4g}",
                         "grad = [[0.5, 0],", " [0.5, 1]]"]]
    assert by_title["input"] == [["input", "(2,)", "float64", "value = [0.5, 1]"]]
    del m  # the graph keeps no values of an input: once its tensor is gone, none are shown
    nodes, _ = parse(viz.to_dot(y, values=True))
    assert [lines for lines in nodes.values() if lines[0] == "input"] == [
        ["input", "(2,)", "float64"]]


def test_values_leaves_a_large_gradient_as_its_norm():
    loss, _, params, _ = small_cnn(np.float64)
    loss.backward()
    nodes, _ = parse(viz.to_dot(loss, params, values=True))
    by_title = {lines[0]: lines[1:] for lines in nodes.values()}
    assert by_title["conv.bias"][3].startswith("grad = [")  # 3 values
    assert len(by_title["conv.weight"]) == 3                 # 27 values: the norm only
    assert by_title["input"] == ["(2, 1, 8, 8)", "float64"]  # 128 values: not shown
    with pytest.raises(TypeError, match="values must be a bool"):
        viz.to_dot(loss, values="yes")
