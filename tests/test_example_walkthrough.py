"""examples/walkthrough.py prints the tutorial's max-pool numbers, to its 8 decimals."""

from __future__ import annotations

import re

import numpy as np
import pytest

from helpers import EXAMPLES, load_example, run_python

SCRIPT = EXAMPLES / "walkthrough.py"

# The output printed in cnn-backward-pass-tutorial by its PyTorch script (float64).
TUTORIAL_OUTPUT = """\
Z:
[[[[ 1.  2.  3.]
   [ 4. 10.  5.]
   [11. 12. 13.]]]]
A:
[[[[10. 10.]
   [12. 13.]]]]
dL/dA:
[[[[-0.1        -0.1       ]
   [-0.08333333 -0.07692308]]]]
dL/dZ:
[[[[ 0.          0.          0.        ]
   [ 0.         -0.2         0.        ]
   [ 0.         -0.08333333 -0.07692308]]]]"""


def numbers(text: str) -> np.ndarray:
    return np.array([float(x) for x in re.findall(r"-?\d+\.\d*", text)])


@pytest.fixture(scope="module")
def output() -> str:
    return run_python([SCRIPT], timeout=120).stdout


def test_prints_the_tutorials_output_in_its_layout(output):
    assert output.startswith(TUTORIAL_OUTPUT + "\n")


def test_numbers_match_the_tutorial_to_8_decimals(output):
    ours = numbers(output[:len(TUTORIAL_OUTPUT)])
    expected = numbers(TUTORIAL_OUTPUT)
    assert ours.shape == expected.shape == (9 + 4 + 4 + 9,)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=5e-9)


def test_prints_pytorchs_numbers_beside_ours(output):
    pytest.importorskip("torch")
    assert "Beside PyTorch:" in output
    table = output.split("Beside PyTorch:\n", 1)[1].splitlines()
    assert table[1].split() == ["tinygrad_conv", "PyTorch"]
    rows = table[2:2 + TUTORIAL_OUTPUT.count("\n") + 1]
    width = table[1].index("PyTorch")
    left = "\n".join(r[:width].rstrip() for r in rows)
    right = "\n".join(r[width:] for r in rows)
    assert left == right == TUTORIAL_OUTPUT
    assert output.rstrip().endswith("largest difference: 0.0e+00")


def test_without_pytorch_it_prints_ours_and_says_how_to_get_pytorchs(monkeypatch, capsys):
    module = load_example("walkthrough")

    def no_torch():
        raise ImportError("No module named 'torch'")

    monkeypatch.setattr(module, "pytorch", no_torch)
    module.main()
    out = capsys.readouterr().out
    assert out.startswith(TUTORIAL_OUTPUT + "\n")
    assert "PyTorch is not installed" in out and "Beside" not in out


def test_the_debugger_recipe_in_its_docstring_stops_in_the_reference_max_pool_gradient():
    module = load_example("walkthrough")
    recipe = [line.strip() for line in module.__doc__.splitlines() if "(Pdb)" in line]
    assert recipe, "the docstring shows no pdb session"
    commands = [line.split("(Pdb) ", 1)[1] for line in recipe] + ["p argmax.ravel()", "quit"]
    done = run_python(["-m", "pdb", SCRIPT], input="\n".join(commands) + "\n", timeout=120,
                      env={"TINYGRAD_CONV_REFERENCE_KERNELS": "1"})
    stops = [line for line in done.stdout.replace("(Pdb) ", "\n").splitlines()
             if line.startswith("> ")]
    assert stops and "reference.py(" in stops[-1], done.stdout
    assert stops[-1].endswith("max_pool2d_backward()"), done.stdout
    assert "array([4, 4, 7, 8])" in done.stdout     # the argmax cells: the 10 twice, 12, 13
