"""examples/mnist.py refuses bad options before it reads any data: a path it could not write or
read, a learning rate that is not a finite positive number, a momentum outside [0, 1). Each is
one line on stderr and exit status 2."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tinygrad_conv

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "mnist.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("mnist_example_args", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def refused(example, capsys, argv: list[str]) -> str:
    """Run main(argv), which must exit with status 2 before training; return its one line."""
    with pytest.raises(SystemExit) as info:
        example.main(argv)
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""  # nothing was loaded or trained
    assert err.count("\n") == 1 and err.endswith("\n"), err
    return err


@pytest.mark.parametrize("argv, message", [
    (["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    (["--lr", "inf"], "--lr must be a finite number > 0, got inf"),
    (["--lr", "-0.1"], "--lr must be a finite number > 0, got -0.1"),
    (["--momentum", "-1"], "--momentum must be in [0, 1), got -1.0"),
    (["--momentum", "1"], "--momentum must be in [0, 1), got 1.0"),
    (["--momentum", "nan"], "--momentum must be in [0, 1), got nan"),
    (["--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["--save-every", "-2"], "--save-every must be >= 0, got -2"),
])
def test_bad_numbers_are_one_line_and_exit_status_2(example, capsys, argv, message):
    assert message in refused(example, capsys, argv)


def test_save_into_a_missing_directory_is_refused_before_training(example, capsys, tmp_path):
    target = tmp_path / "missing" / "ck.npz"
    err = refused(example, capsys, ["--save", str(target)])
    assert f"--save {target}: the directory {target.parent} does not exist" in err


def test_save_onto_a_directory_is_refused(example, capsys, tmp_path):
    assert "is a directory" in refused(example, capsys, ["--save", str(tmp_path)])


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_save_into_a_read_only_directory_is_refused(example, capsys, tmp_path):
    tmp_path.chmod(0o500)
    try:
        assert "is not writable" in refused(example, capsys, ["--save", str(tmp_path / "c.npz")])
    finally:
        tmp_path.chmod(0o700)


def test_resume_from_a_missing_file_is_refused(example, capsys, tmp_path):
    missing = tmp_path / "missing.npz"
    assert f"--resume {missing}: no such readable file" in refused(
        example, capsys, ["--resume", str(missing)])


def test_resume_from_something_else_is_one_line_and_exit_status_2(example, capsys, tmp_path):
    other = tmp_path / "other.npz"
    tinygrad_conv.save({"unrelated": 1}, other)
    argv = ["--resume", str(other), "--limit", "64", "--test-limit", "10", "--no-progress"]
    with pytest.raises(SystemExit) as info:
        example.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--resume {other}: not a checkpoint" in err


def test_the_script_itself_exits_with_status_2_and_one_line(tmp_path):
    done = subprocess.run([sys.executable, str(EXAMPLE), "--save", str(tmp_path / "no" / "c")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"mnist.py: error: --save {tmp_path / 'no' / 'c'}: the directory " \
                          f"{tmp_path / 'no'} does not exist\n"


def test_more_threads_than_the_machine_runs_is_refused_at_argument_checking():
    # issue 20: --threads 100000 used to print "... 65536 threads" and segfault; run as a script
    # so that a crash fails this test rather than the test run
    done = subprocess.run([sys.executable, str(EXAMPLE), "--threads", "100000"],
                          capture_output=True, text=True, timeout=120)
    limit = tinygrad_conv.max_num_threads()
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"mnist.py: error: --threads must be <= {limit}, the most this " \
                          f"machine runs (max_num_threads()), got 100000\n"


def test_a_negative_seed_is_one_line_and_exit_status_2(example, capsys):
    assert "--seed must be >= 0, got -1" in refused(example, capsys, ["--seed", "-1"])


def test_help_shows_each_default_once_and_never_none(example, capsys):
    with pytest.raises(SystemExit) as info:
        example.main(["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())   # argparse wraps lines anywhere
    assert "(default: None)" not in text
    assert re.search(r"\(default:[^)]*\) \(default:", text) is None, text
    assert "(default: 1e-2 for bn, 1e-3 for the others)" in text   # --lr tells its own
    assert "training data (default: 1)" in text and "(default: 64)" in text


def test_the_docstring_quotes_the_readme_accuracy_of_the_default_command(example):
    readme = (ROOT / "README.md").read_text()
    quoted = re.search(r"this command reached \*\*(\d+\.\d+)% test accuracy\*\*", readme)
    ours = re.search(r"python examples/mnist\.py +# 2 epochs, about (\d+\.\d+)% test accuracy",
                     example.__doc__)
    assert quoted and ours and ours.group(1) == quoted.group(1)


def test_a_student_folder_without_exercise_files_is_one_line_and_exit_status_2(example, capsys,
                                                                                 tmp_path):
    message = refused(example, capsys, ["--student", str(tmp_path / "missing")])
    assert "--student" in message and "no conv.py or pool.py there" in message
