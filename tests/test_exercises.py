"""The exercise mode: the grader passes the reference solutions at every level, names each known
mistake planted in them with its own sentence, says "no single known mistake" (with the map)
for two at once, reports stubs as "not started" and learner exceptions with their line, `new`
keeps existing files, and `student_kernels` trains MNIST with the learner's functions to the
same losses as the library's kernels."""

from __future__ import annotations

import shutil
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

import tinygrad_conv
from tinygrad_conv import Tensor, nn
from tinygrad_conv import functional as F
from tinygrad_conv.data import MNIST, DataLoader
from tinygrad_conv.exercises import cases, mistakes
from tinygrad_conv.exercises.checks import library_answer
from tinygrad_conv.exercises.grader import grade, new
from tinygrad_conv.exercises.report import NO_MATCH
from tinygrad_conv.optim import SGD

from helpers import ROOT, run_python

PACKAGE = Path(tinygrad_conv.__file__).resolve().parent / "exercises"
SOLUTIONS, SKELETONS = PACKAGE / "solutions", PACKAGE / "skeletons"
DATA = ROOT / "examples" / "data" / "mnist"


def run_grader(directory, *tasks, functions=(), seed=7):
    """(all passed, printed text) of an in-process grading run."""
    lines: list[str] = []
    ok = grade(directory, tasks or cases.TASKS, functions, seed=seed, out=lines.append)
    return ok, "\n".join(lines)


def planted(tmp_path, task: str, replacements) -> Path:
    """A copy of the reference solution of `task` with each (old, new) text swapped in once."""
    source = (SOLUTIONS / f"{task}.py").read_text()
    for old, new_text in replacements:
        assert source.count(old) == 1, f"{old!r} is not once in solutions/{task}.py"
        source = source.replace(old, new_text)
    (tmp_path / f"{task}.py").write_text(source)
    return tmp_path


# ---- the reference solutions ----------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grader_passes_the_reference_solutions_at_every_level(tmp_path, seed):
    for name in ("conv.py", "pool.py", "value.py"):
        shutil.copy(SOLUTIONS / name, tmp_path / name)
    ok, text = run_grader(tmp_path, seed=seed)
    assert ok, text
    for task, levels in cases.LEVELS.items():
        assert f"{task}: {len(cases.FUNCTIONS[task])} of {len(cases.FUNCTIONS[task])} " \
               f"functions pass levels 1-{len(levels)}" in text, text


def test_the_mistake_models_without_the_mistake_are_the_library_kernels():
    rng = np.random.default_rng(3)
    for case in cases.pool_level(2, rng, hidden=False) + cases.pool_level(4, rng, False):
        if case.function == "max_pool2d_backward":
            assert mistakes.same(mistakes.route_max(case.args, mistakes.first_max), case.expected)
        else:
            assert mistakes.same(mistakes.route_avg(case.args), case.expected)
    for level in range(1, 7):
        for case in cases.conv_level(level, rng, hidden=False):
            if case.function == "conv2d_input_grad" and case.kind == "call":
                full = mistakes.full_correlation(case.args, case.args["stride"])
                assert mistakes.same(mistakes.place_and_crop(case.args, full), case.expected)


def test_on_every_fixed_case_the_mistakes_that_show_are_told_apart():
    """Two mistakes that both change a case's answer change it differently, so a diagnosis
    names one. (On a constant plane every cell ties: "every cell of the window" and "every
    tied maximum" are the same there, and both show earlier, on cases of their own.)"""
    for task, levels in cases.LEVELS.items():
        for level in range(1, len(levels) + 1):
            for case in cases.cases_for(task, level, np.random.default_rng(1000 + level), False):
                if case.kind == "graph" or case.name == "a constant plane: every cell ties":
                    continue
                if case.expected is None:
                    case.expected = library_answer(case)
                shown = {}
                for m in mistakes.MISTAKES:
                    if m.function == case.function:
                        answer = m.model(case.args)
                        if not mistakes.same(answer, case.expected):
                            shown.setdefault(m.sentence, []).append(answer)
                answers = [(s, a) for s, found in shown.items() for a in found]
                for i, (s1, a1) in enumerate(answers):
                    for s2, a2 in answers[i + 1:]:
                        assert s1 == s2 or not mistakes.same(a1, a2), (case.name, s1, s2)


# ---- planted mistakes -----------------------------------------------------------------------

ROUTE_TO_ARGMAX = (
    "            first = window.reshape(n, c, kh * kw).argmax(axis=2)  # argmax: the first "
    "maximum\n"
    "            rows, cols = i * sh + first // kw * dh, j * sw + first % kw * dw\n"
    "            dz_pad[images, channels, rows, cols] += grad_out[:, :, i, j]\n")
WHOLE_WINDOW = "dz_pad[:, :, i * sh: i * sh + kh, j * sw: j * sw + kw]"
TIED = ("            tied = window == window.max(axis=(2, 3), keepdims=True)\n"
        f"            {WHOLE_WINDOW} += tied * grad_out[:, :, i, j, None, None]{{}}\n")

# (mistake, task, function, [(text of the solution, text with the mistake)], the sentence's words)
PLANTED = [
    ("forgot the 180° flip", "conv", "conv2d_input_grad",
     [("w_180 = w[:, :, ::-1, ::-1]", "w_180 = w")], "un-flipped kernel"),
    ("overwrote over filters", "conv", "conv2d_input_grad",
     [("        da_pad += correlate(", "        da_pad = correlate(")],
     "only the last filter's term"),
    ("did not dilate Z' by the stride", "conv", "conv2d_input_grad",
     [("z_dil = dilate(grad_out, stride)", "z_dil = grad_out")], "did not dilate Z'"),
    ("padded by k-1, not d(k-1)", "conv", "conv2d_input_grad",
     [("eh, ew = dilation[0] * (kh - 1), dilation[1] * (kw - 1)", "eh, ew = kh - 1, kw - 1")],
     "by k-1 instead of d(k-1)"),
    ("did not crop", "conv", "conv2d_input_grad",
     [("return full[:, :, top:top + h, left:left + width]", "return full")], "did not crop"),
    ("flipped dL/dW", "conv", "conv2d_weight_grad",
     [("    return dw\n", "    return dw[:, :, ::-1, ::-1]\n")], "dL/dW is rotated by 180°"),
    ("dL/dW of the first image only", "conv", "conv2d_weight_grad",
     [("for image in range(n):", "for image in range(1):")], "only the first image's"),
    ("dL/dW overwrote over the batch", "conv", "conv2d_weight_grad",
     [("dw[:, :, i, j] += np.einsum", "dw[:, :, i, j] = np.einsum")], "only the last image's"),
    ("dL/dW averaged the batch", "conv", "conv2d_weight_grad",
     [("    return dw\n", "    return dw / n\n")], "dL/dW is the batch's mean"),
    ("dL/db of the first image only", "conv", "conv2d_bias_grad",
     [("return grad_out.sum(axis=(0, 2, 3))", "return grad_out[0].sum(axis=(1, 2))")],
     "dL/db holds only the first image's"),
    ("dL/db averaged the batch", "conv", "conv2d_bias_grad",
     [("return grad_out.sum(axis=(0, 2, 3))", "return grad_out.sum(axis=(2, 3)).mean(axis=0)")],
     "dL/db is the batch's mean"),
    ("max-pool windows overwrote", "pool", "max_pool2d_backward",
     [("dz_pad[images, channels, rows, cols] += grad_out",
       "dz_pad[images, channels, rows, cols] = grad_out")], "-0.1 instead of -0.2"),
    ("routed to every window position", "pool", "max_pool2d_backward",
     [(ROUTE_TO_ARGMAX, f"            {WHOLE_WINDOW} += grad_out[:, :, i, j, None, None]\n")],
     "to every cell of the window"),
    ("last maximum instead of first", "pool", "max_pool2d_backward",
     [("first = window.reshape(n, c, kh * kw).argmax(axis=2)",
       "first = kh * kw - 1 - window.reshape(n, c, kh * kw)[..., ::-1].argmax(axis=2)")],
     "went to the last maximum"),
    ("split a tied gradient", "pool", "max_pool2d_backward",
     [(ROUTE_TO_ARGMAX, TIED.format(" / tied.sum(axis=(2, 3), keepdims=True)"))],
     "split A'[i] among tied"),
    ("duplicated a tied gradient", "pool", "max_pool2d_backward",
     [(ROUTE_TO_ARGMAX, TIED.format(""))], "to every tied maximum"),
    ("avg-pool windows overwrote", "pool", "avg_pool2d_backward",
     [("dz[:, :, rows, cols] += grad_out", "dz[:, :, rows, cols] = grad_out")],
     "overwrote each other's share"),
    ("avg-pool did not divide", "pool", "avg_pool2d_backward",
     [("grad_out[:, :, i, j, None, None] / divisor", "grad_out[:, :, i, j, None, None]")],
     "did not divide"),
    ("avg-pool count_include_pad reversed", "pool", "avg_pool2d_backward",
     [("            if count_include_pad:", "            if not count_include_pad:")],
     "count_include_pad the wrong way"),
    ("Value +: = instead of +=", "value", "add",
     [("self.grad += out.grad\n            other.grad += out.grad",
       "self.grad = out.grad\n            other.grad = out.grad")], "backward of add overwrote"),
    ("Value *: = instead of +=", "value", "mul",
     [("self.grad += other.data * out.grad\n            other.grad += self.data * out.grad",
       "self.grad = other.data * out.grad\n            other.grad = self.data * out.grad")],
     "backward of mul overwrote"),
    ("Value **: = instead of +=", "value", "pow",
     [("self.grad += k *", "self.grad = k *")], "backward of pow overwrote"),
    ("Value relu: = instead of +=", "value", "relu",
     [("self.grad += (out.data > 0)", "self.grad = (out.data > 0)")],
     "backward of relu overwrote"),
    ("Value tanh: = instead of +=", "value", "tanh",
     [("self.grad += (1 - out.data", "self.grad = (1 - out.data")], "backward of tanh overwrote"),
    ("Value exp: = instead of +=", "value", "exp",
     [("self.grad += out.data * out.grad", "self.grad = out.data * out.grad")],
     "backward of exp overwrote"),
    ("Mean did not divide by n", "value", "Mean", [(" / shape[axis]", "")],
     "did not divide by n"),
]
SENTENCES = {m.sentence for m in mistakes.MISTAKES}


@pytest.mark.parametrize("task, function, replacements, words",
                         [p[1:] for p in PLANTED], ids=[p[0] for p in PLANTED])
def test_each_planted_mistake_fails_and_is_named_by_its_own_sentence(
        tmp_path, task, function, replacements, words):
    folder = planted(tmp_path, task, replacements)
    for seed in (0, 1):
        ok, text = run_grader(folder, task, functions=[function], seed=seed)
        assert not ok, text
        named = [s for s in SENTENCES if s in text]
        assert len(named) == 1 and words in named[0], text
        assert text.count("diagnosis:") == 1, text


def test_the_tutorials_pool_example_shows_minus_0_2_against_minus_0_1(tmp_path):
    folder = planted(tmp_path, "pool", PLANTED[11][3])
    ok, text = run_grader(folder, "pool", functions=["max_pool2d_backward"])
    assert "the tutorial's example" in text and "[0, 0, 1, 1]: -0.2 vs -0.1" in text, text


def test_two_mistakes_at_once_match_no_model_and_show_the_map(tmp_path):
    folder = planted(tmp_path, "conv", [
        ("dw[:, :, i, j] += np.einsum", "dw[:, :, i, j] = np.einsum"),   # the last image's term
        ("    return dw\n", "    return dw / n\n")])                     # divided by N
    ok, text = run_grader(folder, "conv", functions=["conv2d_weight_grad"])
    assert not ok
    assert NO_MATCH in text and not [s for s in SENTENCES if s in text], text
    assert "cells that differ (x) and agree (.):" in text and " x " in text, text


# ---- stubs, learner errors, the command line ------------------------------------------------

def test_the_skeletons_are_not_started_and_exit_1(tmp_path):
    run_python(["-m", "tinygrad_conv.exercises", "new", tmp_path / "mine"])
    done = run_python(["-m", "tinygrad_conv.exercises", "grade", tmp_path / "mine"], check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    for names in cases.FUNCTIONS.values():
        for name in names:
            assert f"{name}\n  level" in done.stdout and "not started" in done.stdout
    assert done.stdout.count("not started") == sum(map(len, cases.FUNCTIONS.values()))


def test_new_keeps_existing_files_unless_forced(tmp_path):
    (tmp_path / "conv.py").write_text("# my work\n")
    printed = []
    assert new(tmp_path, out=printed.append) == 1
    assert (tmp_path / "conv.py").read_text() == "# my work\n" and "--force" in printed[0]
    assert not (tmp_path / "pool.py").exists()
    assert new(tmp_path, force=True, out=printed.append) == 0
    assert (tmp_path / "conv.py").read_text() == (SKELETONS / "conv.py").read_text()
    assert not (tmp_path / "solutions").exists()


def test_an_exception_in_learner_code_is_reported_with_its_line(tmp_path):
    folder = planted(tmp_path, "conv", [("w_180 = w[:, :, ::-1, ::-1]",
                                         "w_180 = w[:, :, ::-1, ::-1].reshape(7)")])
    ok, text = run_grader(folder, "conv")
    assert not ok
    assert "your code raised ValueError: cannot reshape" in text, text
    assert "at conv.py, line" in text and "w_180 = w[:, :, ::-1, ::-1].reshape(7)" in text
    assert "conv2d_weight_grad\n  level 1 (the tutorial's example): pass" in text  # went on


@pytest.mark.parametrize("returned, words", [
    ("grad_out.sum(axis=(0, 2, 3)).tolist()", "returned list, not a numpy array"),
    ("grad_out.sum(axis=(0, 2, 3)).astype(np.float32)", "returned dtype float32, expected float64"),
    ("grad_out.sum(axis=(0, 2))", "returned shape (1, 2), expected (1,)"),
])
def test_a_broken_contract_is_named_without_a_false_diagnosis(tmp_path, returned, words):
    folder = planted(tmp_path, "conv", [("grad_out.sum(axis=(0, 2, 3))", returned)])
    ok, text = run_grader(folder, "conv", functions=["conv2d_bias_grad"])
    assert not ok and words in text, text
    assert not [s for s in SENTENCES if s in text] and NO_MATCH not in text, text


def test_a_learner_that_changes_its_arguments_is_told_so(tmp_path):
    folder = planted(tmp_path, "conv", [("return grad_out.sum(axis=(0, 2, 3))",
                                         "grad_out *= 1\n    grad_out[0] = 0\n"
                                         "    return grad_out.sum(axis=(0, 2, 3))")])
    ok, text = run_grader(folder, "conv", functions=["conv2d_bias_grad"])
    assert "changed its argument grad_out" in text, text


def test_a_wrong_shape_is_diagnosed_from_the_settings(tmp_path):
    # sliced, not placed: [top:-bottom] of the un-dilated correlation gives a smaller dL/dA
    folder = planted(tmp_path, "conv", [(
        "    full = np.zeros((n, c, h + top + bottom, width + left + right), "
        "dtype=grad_out.dtype)\n"
        "    full[:, :, :da_pad.shape[2], :da_pad.shape[3]] = da_pad\n"
        "    return full[:, :, top:top + h, left:left + width]",
        "    return da_pad[:, :, top:da_pad.shape[2] - bottom, left:da_pad.shape[3] - right]"),
        ("z_dil = dilate(grad_out, stride)", "z_dil = grad_out")])
    ok, text = run_grader(folder, "conv", functions=["conv2d_input_grad"])
    assert "returned shape" in text and "did not dilate Z'" in text, text


def test_hidden_cases_come_from_the_seed(tmp_path):
    first = cases.conv_level(3, np.random.default_rng([5, 0, 3]), hidden=True)
    again = cases.conv_level(3, np.random.default_rng([5, 0, 3]), hidden=True)
    other = cases.conv_level(3, np.random.default_rng([6, 0, 3]), hidden=True)
    assert all(np.array_equal(a.expected, b.expected) for a, b in zip(first, again))
    assert not all(a.expected.shape == b.expected.shape and np.allclose(a.expected, b.expected)
                   for a, b in zip(first, other))


# ---- student_kernels ------------------------------------------------------------------------

def small_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),           # 28 -> 14
        nn.Conv2d(4, 6, 3, stride=2, groups=2), nn.ReLU(),                    # 14 -> 6
        nn.AvgPool2d(3, stride=1, padding=1), nn.Flatten(), nn.Linear(6 * 6 * 6, 10)).double()


def losses_of_50_steps(images, labels) -> list[float]:
    tinygrad_conv.manual_seed(0)
    model = small_net()
    optimizer = SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = DataLoader(type("Set", (), {"images": images, "labels": labels}), 16,
                        shuffle=True, seed=0, normalize=(0.1307, 0.3081))
    losses = []
    for x, y in loader:
        loss = F.cross_entropy(model(Tensor(x.astype(np.float64))), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_student_kernels_train_50_mnist_steps_to_the_librarys_losses(tmp_path):
    train = MNIST(DATA, train=True, download=False)
    images, labels = train.images[:800], train.labels[:800]
    reference = losses_of_50_steps(images, labels)
    for name in ("conv.py", "pool.py"):
        shutil.copy(SOLUTIONS / name, tmp_path / name)
    with tinygrad_conv.student_kernels(tmp_path):
        own = losses_of_50_steps(images, labels)
    assert len(own) == 50
    np.testing.assert_allclose(own, reference, rtol=1e-9)
    assert np.mean(reference[-10:]) < reference[0] - 0.3      # it learned
    # the learner's code is what runs: a planted mistake changes the run
    planted(tmp_path, "pool", [("dz_pad[images, channels, rows, cols] += grad_out",
                                "dz_pad[images, channels, rows, cols] = 2 * grad_out")])
    with tinygrad_conv.student_kernels(tmp_path):
        wrong = losses_of_50_steps(images[:160], labels[:160])
    assert not np.allclose(wrong, reference[:10])


def test_student_kernels_fall_back_for_stubs_with_one_warning_in_this_thread_only(tmp_path):
    shutil.copy(SKELETONS / "conv.py", tmp_path / "conv.py")
    shutil.copy(SOLUTIONS / "pool.py", tmp_path / "pool.py")
    calls = []
    source = (tmp_path / "pool.py").read_text()
    (tmp_path / "pool.py").write_text(source.replace(
        '    n, c, h, w = x.shape\n', '    n, c, h, w = x.shape\n    CALLS.append(1)\n', 1)
        + "\nCALLS = []\n")
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 6, 6)), requires_grad=True)
    w = Tensor(np.random.default_rng(1).standard_normal((2, 3, 3, 3)), requires_grad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        switch = tinygrad_conv.student_kernels(tmp_path)
    assert len(caught) == 1 and "conv2d_input_grad, conv2d_weight_grad, conv2d_bias_grad" \
        in str(caught[0].message) and "avg_pool2d_backward" not in str(caught[0].message)
    calls = switch.functions["max_pool2d_backward"].__globals__["CALLS"]
    with switch:
        F.max_pool2d(F.conv2d(x, w), 2).sum().backward()     # conv by the library
        other = threading.Thread(target=lambda: F.max_pool2d(x, 2).sum().backward())
        other.start()
        other.join()
    assert len(calls) == 1          # the other thread used the library's kernel
    expected = Tensor(x.data, requires_grad=True)
    F.max_pool2d(F.conv2d(expected, w), 2).sum().backward()
    F.max_pool2d(expected, 2).sum().backward()
    np.testing.assert_allclose(x.grad, expected.grad, rtol=1e-12)


def test_student_kernels_report_a_wrong_shape_naming_the_function(tmp_path):
    planted(tmp_path, "conv", [("return grad_out.sum(axis=(0, 2, 3))",
                                "return grad_out.sum(axis=(0, 1, 2))")])
    x = Tensor(np.ones((1, 1, 4, 5)))
    w, b = Tensor(np.ones((2, 1, 2, 2))), Tensor(np.zeros(2), requires_grad=True)
    with pytest.warns(UserWarning), tinygrad_conv.student_kernels(tmp_path):
        with pytest.raises(ValueError, match="conv2d_bias_grad returned"):
            F.conv2d(x, w, b).sum().backward()


def test_mnist_example_trains_with_the_students_functions(tmp_path):
    for name in ("conv.py", "pool.py"):
        shutil.copy(SOLUTIONS / name, tmp_path / name)
    args = [ROOT / "examples" / "mnist.py", "--model", "small", "--limit", "128",
            "--test-limit", "100", "--epochs", "1", "--no-progress", "--threads", "1"]
    own = run_python(args + ["--student", tmp_path]).stdout
    library = run_python(args).stdout
    # the epoch line's losses and accuracies (not its time)
    assert own.splitlines()[-2].split("|")[:2] == library.splitlines()[-2].split("|")[:2]


@pytest.mark.skipif(not (ROOT / "README.md").exists(), reason="a wheel's test run has no README")
def test_the_readmes_custom_op_example_prints_what_it_says(capsys):
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```python\nfrom tinygrad_conv import Function")
    block = readme[start + len("```python\n"):readme.index("```", start + 3)]
    exec(compile(block, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip() == block.split("# ")[-1].strip()


def test_the_installed_package_has_the_skeletons_solutions_and_every_subpackage():
    for name in ("conv.py", "pool.py", "value.py"):
        assert (SKELETONS / name).is_file() and (SOLUTIONS / name).is_file(), name
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(ROOT / "pyproject.toml", "rb") as f:
        declared = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    root = PACKAGE.parent
    found = {".".join(("tinygrad_conv",) + p.parent.relative_to(root).parts)
             for p in root.rglob("__init__.py")}
    assert found <= declared, f"pyproject.toml's packages miss {sorted(found - declared)}"
