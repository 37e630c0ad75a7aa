"""tinygrad_conv.checkpoint: round trips, exact resumption, atomic writes, clear errors."""

import math
import os
import random
import re
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tinygrad_conv import checkpoint
from tinygrad_conv.checkpoint import load, save
from tinygrad_conv.data import DataLoader

from helpers import assert_same_checkpoint, start_python


def nested_state() -> dict:
    rng = np.random.default_rng(0)
    return {
        "model": {
            "conv1": {"weight": rng.standard_normal((4, 1, 3, 3)).astype(np.float32),
                      "bias": np.zeros(4, np.float32)},
            "fc": {"weight": rng.standard_normal((10, 8)),  # float64
                   "bias": np.asfortranarray(rng.standard_normal((2, 5)))},
        },
        "arrays": {
            "int64": np.arange(-5, 5, dtype=np.int64),
            "uint8": np.array([[0, 255], [7, 128]], dtype=np.uint8),
            "int32": np.array([-(2 ** 31), 2 ** 31 - 1], dtype=np.int32),
            "bool": np.array([True, False, True]),
            "float16": np.array([1.5, -0.0, np.inf], dtype=np.float16),
            "complex": np.array([1 + 2j, -3j]),
            "zero_d": np.array(3.25),
            "empty": np.zeros((0, 3), np.float32),
            "strided": np.arange(20.0)[::3],
            "unicode": np.array(["héllo", "wörld"]),
        },
        "optimizer": {"type": "SGD", "n_params": 4,
                      "hyper": {"lr": 0.1, "momentum": 0.9, "nesterov": False},
                      "state": {}},
        "epoch": 3,
        "step": 0,
        "huge": 2 ** 127 + 5,  # a PCG64 state is a 128-bit Python int
        "negative": -12,
        "scalars": {"pi": math.pi, "tiny": 5e-324, "neg_zero": -0.0, "inf": -math.inf,
                    "nan": math.nan, "flag": True, "off": False},
        "text": {"empty": "", "name": "run-7 ✓ \"quoted\" / slash"},
    }


def test_nested_state_round_trips_with_types_dtypes_and_values(tmp_path):
    state = nested_state()
    save(state, tmp_path / "ckpt.npz")
    assert_same_checkpoint(load(tmp_path / "ckpt.npz"), state)
    assert_same_checkpoint(load(os.fspath(tmp_path / "ckpt.npz")), state)  # str paths too


def test_file_is_an_ordinary_npz_with_slash_joined_keys(tmp_path):
    save({"model": {"conv1": {"weight": np.ones((2, 2), np.float32)}}, "epoch": 1},
         tmp_path / "ckpt.npz")
    with np.load(tmp_path / "ckpt.npz", allow_pickle=False) as npz:
        assert sorted(npz.files) == ["__checkpoint__", "model/conv1/weight"]
        np.testing.assert_array_equal(npz["model/conv1/weight"], np.ones((2, 2)))


def test_keys_that_clash_with_numpy_savez_arguments_are_fine(tmp_path):
    state = {"file": np.ones(2), "arr_0": np.zeros(1), "allow_pickle": 1, "kwds": {"args": 2.0}}
    save(state, tmp_path / "ckpt.npz")
    assert_same_checkpoint(load(tmp_path / "ckpt.npz"), state)


def test_loaded_arrays_are_independent_writable_copies(tmp_path):
    weight = np.arange(6, dtype=np.float32)
    save({"w": weight}, tmp_path / "ckpt.npz")
    out = load(tmp_path / "ckpt.npz")["w"]
    out += 1
    np.testing.assert_array_equal(weight, np.arange(6, dtype=np.float32))
    np.testing.assert_array_equal(load(tmp_path / "ckpt.npz")["w"], weight)


def test_saving_again_replaces_the_file(tmp_path):
    path = tmp_path / "ckpt.npz"
    save({"step": 1, "w": np.zeros(3)}, path)
    save({"step": 2}, path)
    assert load(path) == {"step": 2}
    assert os.listdir(tmp_path) == ["ckpt.npz"]


# --- a resumed run continues exactly ------------------------------------------------------

class Digits:
    """A small synthetic image dataset for a DataLoader."""

    def __init__(self):
        rng = np.random.default_rng(5)
        self.images = rng.integers(0, 256, (50, 4, 4), dtype=np.uint8)
        self.labels = rng.integers(0, 3, 50).astype(np.int64)


def train(state: dict, steps: int, loader: DataLoader, path: Path | None = None) -> dict:
    """Softmax regression by SGD with momentum and dropout, advancing ``state`` in place.

    Everything the run depends on (weights, momentum, the dropout generator, the position in
    the data) lives in ``state``; with ``path`` it is saved after every step.
    """
    rng = np.random.default_rng()
    rng.bit_generator.state = state["rng"]
    loader.set_epoch(state["epoch"], start_batch=state["batch"])
    batches = iter(loader)
    for _ in range(steps):
        try:
            x, y = next(batches)
        except StopIteration:
            state["epoch"], state["batch"] = state["epoch"] + 1, 0
            loader.set_epoch(state["epoch"])
            batches = iter(loader)
            x, y = next(batches)
        x = x.reshape(len(x), -1) * (rng.random(x.shape[0:1] + (16,)) > 0.2)
        logits = x @ state["model"]["w"]
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(len(y)), y] -= 1
        grad = x.T @ p / len(y)
        buf = state["optimizer"]["momentum_buffer"]
        buf *= state["optimizer"]["momentum"]
        buf += grad
        state["model"]["w"] -= state["optimizer"]["lr"] * buf
        state["batch"] += 1
        state["step"] += 1
        state["rng"] = rng.bit_generator.state
        if path is not None:
            save(state, path)
    return state


def fresh_state() -> dict:
    return {
        "model": {"w": np.zeros((16, 3))},
        "optimizer": {"lr": 0.05, "momentum": 0.9, "momentum_buffer": np.zeros((16, 3))},
        "rng": np.random.default_rng(1).bit_generator.state,
        "epoch": 0, "batch": 0, "step": 0,
    }


def test_resumed_run_matches_an_uninterrupted_one_exactly(tmp_path):
    straight = train(fresh_state(), 23, DataLoader(Digits(), 8, shuffle=True, seed=2))
    path = tmp_path / "ckpt.npz"
    train(fresh_state(), 9, DataLoader(Digits(), 8, shuffle=True, seed=2), path)  # stops
    resumed = load(path)
    assert resumed["step"] == 9 and resumed["epoch"] == 1 and resumed["batch"] == 2
    resumed = train(resumed, 14, DataLoader(Digits(), 8, shuffle=True, seed=2))
    assert resumed["model"]["w"].tobytes() == straight["model"]["w"].tobytes()
    assert_same_checkpoint(resumed, straight)


def test_optimizer_state_dicts_resume_exactly_through_a_checkpoint(tmp_path):
    from tinygrad_conv import Tensor
    from tinygrad_conv.optim import SGD, Adam

    target = np.random.default_rng(3).standard_normal((4, 3)).astype(np.float32)

    def run(make, steps, w=None, opt_state=None):
        param = Tensor(np.ones((4, 3), np.float32) if w is None else w, requires_grad=True)
        opt = make([param])
        if opt_state is not None:
            opt.load_state_dict(opt_state)
        for _ in range(steps):
            param.grad = (param.data - target) * np.abs(param.data)
            opt.step()
        return param.data, opt.state_dict()

    for make in (lambda p: SGD(p, lr=0.1, momentum=0.9, nesterov=True),
                 lambda p: Adam(p, lr=0.05, weight_decay=0.01, amsgrad=True)):
        straight, _ = run(make, 7)
        w, opt_state = run(make, 3)
        save({"model": {"w": w}, "optimizer": opt_state}, tmp_path / "ckpt.npz")
        state = load(tmp_path / "ckpt.npz")
        assert_same_checkpoint(state["optimizer"], opt_state)
        resumed, _ = run(make, 4, state["model"]["w"], state["optimizer"])
        assert np.isfinite(straight).all() and not np.array_equal(straight, w)
        assert resumed.dtype == np.float32 and resumed.tobytes() == straight.tobytes()


# --- atomic writes ------------------------------------------------------------------------

def old_checkpoint(tmp_path: Path) -> tuple[Path, dict]:
    path = tmp_path / "ckpt.npz"
    state = {"step": 1, "w": np.arange(1000.0)}
    save(state, path)
    return path, state


def fail_in_write_array_after_some_bytes(monkeypatch):
    real = np.lib.format.write_array

    def write_then_fail(fp, array, *args, **kwargs):
        if array.size > 10_000:
            fp.write(b"\x00" * 4096)
            raise OSError(28, "No space left on device")
        return real(fp, array, *args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", write_then_fail)


def fail_in_fsync(monkeypatch):
    def fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", fsync)


def fail_in_replace(monkeypatch):
    def replace(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", replace)


def interrupt_in_write_array(monkeypatch):
    def interrupted(fp, array, *args, **kwargs):
        fp.write(b"\x93NUMPY")
        raise KeyboardInterrupt

    monkeypatch.setattr(np.lib.format, "write_array", interrupted)


@pytest.mark.parametrize("fail, error, message", [
    (fail_in_write_array_after_some_bytes, OSError, "No space left"),
    (fail_in_fsync, OSError, "Input/output error"),
    (fail_in_replace, PermissionError, "Permission denied"),
    (interrupt_in_write_array, KeyboardInterrupt, None),  # the type is the whole signal
])
def test_failed_save_keeps_the_previous_file_and_leaves_no_temp_file(tmp_path, monkeypatch,
                                                                     fail, error, message):
    path, state = old_checkpoint(tmp_path)
    before = path.read_bytes()
    fail(monkeypatch)
    with pytest.raises(error, match=message):  # the injected failure itself, passed on
        save({"step": 2, "w": np.zeros(5), "big": np.ones(20_000)}, path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ckpt.npz"]
    assert path.read_bytes() == before
    assert_same_checkpoint(load(path), state)


def test_invalid_state_is_rejected_before_touching_the_file(tmp_path):
    path, state = old_checkpoint(tmp_path)
    with pytest.raises(TypeError, match=r"save: 'bad' is a list"):
        save({"step": 2, "bad": [1, 2]}, path)
    assert os.listdir(tmp_path) == ["ckpt.npz"]
    assert_same_checkpoint(load(path), state)


WRITER = """
import sys
import numpy as np
from tinygrad_conv.checkpoint import save
rng = np.random.default_rng(0)
weights = {f"w{i}": rng.standard_normal(100_000) for i in range(4)}
step = 0
while True:
    step += 1
    save({"step": step, "model": weights, "check": float(weights["w0"][0] + step)}, sys.argv[1])
    print(step, flush=True)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL is POSIX-only")
def test_sigkill_at_random_moments_always_leaves_a_checkpoint_that_loads(tmp_path):
    path = tmp_path / "ckpt.npz"
    chooser = random.Random(1234)
    last_step = 0
    for _ in range(4):
        child = start_python(["-c", WRITER, path], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline()  # at least one save has completed
            time.sleep(chooser.uniform(0.0, 0.3))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
            child.stdout.close()
        state = load(path)
        assert state["step"] >= 1
        assert state["check"] == float(state["model"]["w0"][0] + state["step"])
        assert [state["model"][f"w{i}"].shape for i in range(4)] == [(100_000,)] * 4
        last_step = state["step"]
    assert last_step >= 1
    # a kill may strand a hidden temp file next to the checkpoint, never a broken checkpoint
    assert all(p.name == "ckpt.npz" or p.name.startswith(".ckpt.npz.")
               for p in tmp_path.iterdir())


# --- clear errors -------------------------------------------------------------------------

def names(path: Path) -> str:
    return re.escape(os.fspath(path))


@pytest.mark.parametrize("keep", [0, 5, 22, 100, 1000, 0.5, 0.9, -1])
def test_truncated_file_is_a_value_error_naming_it(tmp_path, keep):
    path = tmp_path / "ckpt.npz"
    save(nested_state(), path)
    content = path.read_bytes()
    cut = int(len(content) * keep) if isinstance(keep, float) else keep
    path.write_bytes(content[:cut])
    with pytest.raises(ValueError, match=names(path)):
        load(path)


def test_flipped_byte_in_array_data_is_a_value_error_naming_it(tmp_path):
    path = tmp_path / "ckpt.npz"
    save({"w": np.zeros(10_000)}, path)
    content = bytearray(path.read_bytes())
    content[40_000] ^= 0xFF  # inside w's data: the zip CRC no longer matches
    path.write_bytes(bytes(content))
    with pytest.raises(ValueError, match=names(path)):
        load(path)


@pytest.mark.parametrize("content", [
    bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
    b"PK\x03\x04" + bytes(200),
    b"\x93NUMPY garbage",
    b"just some text\n",
], ids=["random", "zip-magic", "npy-magic", "text"])
def test_random_bytes_are_a_value_error_naming_the_file(tmp_path, content):
    path = tmp_path / "ckpt.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=names(path)):
        load(path)


def test_someone_elses_npz_is_a_value_error_naming_the_file(tmp_path):
    path = tmp_path / "weights.npz"
    np.savez(path, weight=np.ones(3), bias=np.zeros(3))
    with pytest.raises(ValueError, match=names(path)) as info:
        load(path)
    assert "not a tinygrad_conv checkpoint" in str(info.value)


def test_plain_npy_file_is_a_value_error_naming_the_file(tmp_path):
    path = tmp_path / "weights.npy"
    np.save(path, np.ones(3))
    with pytest.raises(ValueError, match=names(path)):
        load(path)


def write_with_header(path: Path, header: bytes) -> None:
    with zipfile.ZipFile(path, "w") as archive, archive.open("__checkpoint__.npy", "w") as f:
        np.lib.format.write_array(f, np.frombuffer(header, np.uint8))


@pytest.mark.parametrize("header, message", [
    (b'{"format": "something.else", "version": 1, "tree": {}}', "not a tinygrad_conv"),
    (b'{"format": "tinygrad_conv.checkpoint", "version": 99, "tree": {}}', "version 99"),
    (b'{"format": "tinygrad_conv.checkpoint", "version": 1}', "malformed"),
    (b'{"format": "tinygrad_conv.checkpoint", "version": 1, "tree": {"w": ["ndarray", "w"]}}',
     "cannot read 'w'"),
    (b'{"format": "tinygrad_conv.checkpoint", "version": 1, "tree": {"x": ["set", 1]}}',
     "malformed"),
    (b'{"format": "tinygrad_conv.checkpoint", "version": 1, "tree": {"n": ["int", "7"]}}',
     "malformed"),
    (b"\xff\xfe not json", "unreadable header"),
    (b"[1, 2]", "not a tinygrad_conv"),
])
def test_foreign_or_damaged_header_is_a_value_error_naming_the_file(tmp_path, header, message):
    path = tmp_path / "ckpt.npz"
    write_with_header(path, header)
    with pytest.raises(ValueError, match=names(path)) as info:
        load(path)
    assert message in str(info.value)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope.npz")


@pytest.mark.parametrize("state, key", [
    ({"model": {"w": [1.0, 2.0]}}, "model/w"),
    ({"a": {"b": {"c": None}}}, "a/b/c"),
    ({"lr": np.float32(0.1)}, "lr"),
    ({"step": np.int64(3)}, "step"),
    ({"t": (1, 2)}, "t"),
    ({"o": np.array([object()])}, "o"),
    ({"model": {3: np.ones(2)}}, "model"),
], ids=["list", "none", "np.float32", "np.int64", "tuple", "object-array", "int-key"])
def test_unsupported_leaves_and_keys_are_a_type_error_naming_the_key(tmp_path, state, key):
    with pytest.raises(TypeError, match=re.escape(repr(key))):
        save(state, tmp_path / "ckpt.npz")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("state", [{"a/b": 1}, {"": 1}, {"m": {"": 1}},
                                   {checkpoint._HEADER: np.ones(1)}])
def test_ambiguous_or_reserved_keys_are_a_value_error(tmp_path, state):
    with pytest.raises(ValueError, match="save: key"):
        save(state, tmp_path / "ckpt.npz")


def test_state_must_be_a_dict(tmp_path):
    with pytest.raises(TypeError, match="state must be a dict"):
        save([np.ones(2)], tmp_path / "ckpt.npz")
