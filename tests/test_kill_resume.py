"""Checkpoints survive interruption: examples/mnist.py killed with SIGKILL at random moments
(some of them in the middle of a checkpoint write) always leaves a last checkpoint that loads,
and `--resume` from it runs to the end and ends with exactly the weights and optimizer state
of an uninterrupted run. A checkpoint that does not match the model is refused, naming the key.

CI runs KILL_TRIALS_CI trials; `pytest -m slow` runs KILL_TRIALS_SLOW more.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import tinygrad_conv
from tinygrad_conv import nn

from helpers import ROOT, assert_same_checkpoint, run_python, start_python

needs_sigkill = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL is POSIX-only")
SCRIPT = ROOT / "examples" / "mnist.py"
# a tiny run: 4 batches of 64 per epoch, 2 epochs, a checkpoint after every step
RUN = ["--model", "small", "--limit", "256", "--test-limit", "100", "--epochs", "2",
       "--batch-size", "64", "--seed", "3", "--save-every", "1", "--no-progress"]
KILL_TRIALS_CI = 4
KILL_TRIALS_SLOW = 30


def _run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run_python([SCRIPT, *args, "--threads", "1"], cwd=cwd, timeout=120, check=check,
                      env={"OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    """The final checkpoint of a run that was never stopped."""
    d = tmp_path_factory.mktemp("uninterrupted")
    _run([*RUN, "--save", "ck.npz"], d)
    return tinygrad_conv.load(d / "ck.npz")


def _kill_and_resume(d: Path, during_write: bool, rng: random.Random,
                     expected: dict) -> bool:
    """One trial: start the run, SIGKILL it while it runs, check the checkpoint, resume to the
    end. Returns whether the kill landed while a checkpoint was being written."""
    ckpt = d / "ck.npz"
    child = start_python([SCRIPT, *RUN, "--threads", "1", "--save", ckpt], cwd=d,
                         env={"OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not ckpt.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        if during_write:  # kill the moment a temporary checkpoint file appears
            while child.poll() is None and time.monotonic() < deadline \
                    and not list(d.glob(".ck.npz.*.tmp")):
                pass
        else:  # kill at a random moment of the rest of the run (it lasts ~0.1 s more)
            time.sleep(rng.uniform(0.0, 0.05))
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL, \
        f"the run ended (status {child.returncode}) before the kill: the trial tested nothing"
    mid_write = bool(list(d.glob(".ck.npz.*.tmp")))

    state = tinygrad_conv.load(ckpt)  # the last checkpoint on disk always loads
    assert {"model", "optimizer", "position", "rng"} <= state.keys()
    resumed = _run([*RUN, "--save", str(ckpt), "--resume", str(ckpt)], d)
    assert "resumed from" in resumed.stdout
    # the epoch's running sums are reported numbers, not state: only their presence counts
    assert_same_checkpoint(tinygrad_conv.load(ckpt), expected, skip=("state/running",))
    return mid_write


def _trials(tmp_path: Path, n: int, uninterrupted: dict, seed: int) -> None:
    rng = random.Random(seed)
    mid_writes = 0
    for i in range(n):
        d = tmp_path / f"trial{i}"
        d.mkdir()
        mid_writes += _kill_and_resume(d, during_write=i % 2 == 1, rng=rng,
                                       expected=uninterrupted)
    print(f"\ntest_kill_resume: {n} kill-and-resume trials, all resumed to the uninterrupted "
          f"run's final state; {mid_writes} killed during a checkpoint write")
    assert mid_writes >= 1, "no kill landed during a checkpoint write"


@needs_sigkill
def test_sigkill_at_random_moments_always_resumes_to_the_uninterrupted_result(tmp_path,
                                                                              uninterrupted):
    _trials(tmp_path, KILL_TRIALS_CI, uninterrupted, seed=0)


@pytest.mark.slow
@needs_sigkill
def test_sigkill_many_times_always_resumes_to_the_uninterrupted_result(tmp_path,
                                                                       uninterrupted):
    _trials(tmp_path, KILL_TRIALS_SLOW, uninterrupted, seed=1)


# ---- a checkpoint that does not match the model is refused, naming the key --------------------

def _model() -> nn.Sequential:
    tinygrad_conv.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))


def test_checkpoint_missing_a_key_is_refused_naming_it(tmp_path):
    state = dict(_model().state_dict())
    del state["3.bias"]
    tinygrad_conv.save({"model": state}, tmp_path / "ck.npz")
    model = _model()
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"3\.bias"):
        model.load_state_dict(tinygrad_conv.load(tmp_path / "ck.npz")["model"])
    for p, b in zip(model.parameters(), before):  # nothing was half-loaded
        np.testing.assert_array_equal(p.data, b)


def test_checkpoint_with_a_wrong_shape_is_refused_naming_the_key(tmp_path):
    state = dict(_model().state_dict())
    state["0.weight"] = np.zeros((2, 1, 5, 5), np.float32)
    tinygrad_conv.save({"model": state}, tmp_path / "ck.npz")
    with pytest.raises(ValueError, match=r"0\.weight.*\(2, 1, 5, 5\)"):
        _model().load_state_dict(tinygrad_conv.load(tmp_path / "ck.npz")["model"])


@pytest.mark.parametrize("dtype", [np.float64, np.int64])
def test_checkpoint_with_a_wrong_dtype_is_refused_naming_the_key(tmp_path, dtype):
    state = dict(_model().state_dict())
    state["3.weight"] = state["3.weight"].astype(dtype)
    tinygrad_conv.save({"model": state}, tmp_path / "ck.npz")
    with pytest.raises((TypeError, ValueError), match=r"3\.weight"):
        _model().load_state_dict(tinygrad_conv.load(tmp_path / "ck.npz")["model"])


def test_resume_from_a_checkpoint_of_another_model_is_refused_naming_the_key(tmp_path):
    _run([*RUN, "--save", "ck.npz", "--max-steps", "1"], tmp_path)
    # a genuine checkpoint of this run, but with another model's arrays inside
    state = tinygrad_conv.load(tmp_path / "ck.npz")
    tinygrad_conv.manual_seed(0)
    state["model"] = dict(nn.Sequential(nn.Conv2d(1, 4, 3)).state_dict())
    tinygrad_conv.save(state, tmp_path / "ck.npz")
    resumed = _run([*RUN, "--resume", "ck.npz"], tmp_path, check=False)
    assert resumed.returncode != 0
    assert "0.weight" in resumed.stderr and "3.weight" in resumed.stderr, resumed.stderr
