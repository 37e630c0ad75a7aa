"""Checkpoints under hostile input: keys that cannot round-trip are refused before anything is
written, keys that look like member names or the header read back as themselves, and every
damaged file (each byte flipped, forged shapes, absurd nesting) is a ValueError naming the file,
never a MemoryError, RecursionError or an exception from zipfile's internals."""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tinygrad_conv.checkpoint import MAX_DEPTH, load, save


def small_state() -> dict:
    return {"model": {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(2)},
            "epoch": 3, "lr": 0.1, "name": "run"}


def assert_same(out: dict, expected: dict) -> None:
    assert list(out) == list(expected)
    for key, value in expected.items():
        if isinstance(value, dict):
            assert_same(out[key], value)
        elif isinstance(value, np.ndarray):
            assert out[key].dtype == value.dtype and np.array_equal(out[key], value), key
        else:
            assert type(out[key]) is type(value) and out[key] == value, key


@pytest.mark.parametrize("key", ["a\0b", "\0", "back\\slash", "lone \udc80 surrogate"],
                         ids=["nul", "only-nul", "backslash", "surrogate"])
def test_unstorable_key_is_refused_and_the_old_checkpoint_survives(tmp_path, key):
    path = tmp_path / "ckpt.npz"
    save(small_state(), path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="save: key"):
        save({"model": {key: np.ones(2)}, "epoch": 4}, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ckpt.npz"]
    assert_same(load(path), small_state())


def test_keys_that_look_like_member_names_or_the_header_read_back_as_themselves(tmp_path):
    state = {"x": np.array([1.0]), "x.npy": np.array([2.0]), "x.npy.npy": np.array([3.0]),
             "__checkpoint__.npy": np.array([4.0]),
             "m": {"__checkpoint__": np.array([5.0]), "__checkpoint__.npy": 6}}
    save(state, tmp_path / "ckpt.npz")
    assert_same(load(tmp_path / "ckpt.npz"), state)


def test_every_flipped_byte_is_a_value_error_naming_the_file_or_loads(tmp_path):
    path = tmp_path / "ckpt.npz"
    save(small_state(), path)
    good = path.read_bytes()
    errors = set()
    fd = os.open(path, os.O_WRONLY)
    try:
        for position in range(len(good)):
            for flip in (0xFF, 0x01, 0x80):
                os.pwrite(fd, bytes([good[position] ^ flip]), position)
                try:
                    load(path)
                except ValueError as e:
                    assert os.fspath(path) in str(e), (position, flip, e)
                    errors.add(str(e).replace(os.fspath(path), "")[:25])
                except Exception as e:  # noqa: BLE001 - any other exception is the failure
                    pytest.fail(f"flipping byte {position} with {flip:#x} raised "
                                f"{type(e).__name__}: {e}")
            os.pwrite(fd, good[position:position + 1], position)
    finally:
        os.close(fd)
    assert len(errors) > 3  # the sweep reached more than one kind of damage
    assert_same(load(path), small_state())


def write_raw(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)


def npy_bytes(array: np.ndarray, header: dict | None = None) -> bytes:
    """An .npy file of `array`'s bytes, its header replaced by `header` when given."""
    fields = np.lib.format.header_data_from_array_1_0(array)
    fields.update(header or {})
    import io
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, fields)
    return buffer.getvalue() + array.tobytes()


def header_bytes(tree: dict) -> bytes:
    text = json.dumps({"format": "tinygrad_conv.checkpoint", "version": 1, "tree": tree})
    return npy_bytes(np.frombuffer(text.encode(), np.uint8))


@pytest.mark.parametrize("shape", [(10 ** 12,), (2 ** 40, 2 ** 30), (3,), (0,)])
def test_forged_shape_is_a_value_error_before_anything_is_allocated(tmp_path, shape):
    path = tmp_path / "ckpt.npz"
    write_raw(path, {"__checkpoint__.npy": header_bytes({"w": ["ndarray", "w"]}),
                     "w.npy": npy_bytes(np.zeros(2), {"shape": shape})})
    with pytest.raises(ValueError, match=re.escape(os.fspath(path)) + ".*shape"):
        load(path)


@pytest.mark.parametrize("version", [True, 1.0, "1", 2, None], ids=repr)
def test_header_version_other_than_the_int_1_is_refused(tmp_path, version):
    # json's true and 1.0 compare equal to 1 in Python; neither is a version save writes
    path = tmp_path / "ckpt.npz"
    text = json.dumps({"format": "tinygrad_conv.checkpoint", "version": version, "tree": {}})
    write_raw(path, {"__checkpoint__.npy": npy_bytes(np.frombuffer(text.encode(), np.uint8))})
    with pytest.raises(ValueError, match=re.escape(f"format version {version!r}; this code "
                                                   "reads version 1")):
        load(path)


def test_deeply_nested_header_is_a_value_error_not_a_recursion_error(tmp_path):
    path = tmp_path / "ckpt.npz"
    for text in ('{"format": "tinygrad_conv.checkpoint", "version": 1, "tree": '
                 + '{"a": ' * 100_000 + "{}" + "}" * 100_001,
                 '{"format": "tinygrad_conv.checkpoint", "version": 1, "tree": {"a": '
                 + "[" * 100_000 + "]" * 100_000 + "}}"):
        write_raw(path, {"__checkpoint__.npy": npy_bytes(np.frombuffer(text.encode(), np.uint8))})
        with pytest.raises(ValueError, match=re.escape(os.fspath(path))):
            load(path)
    tree: dict = {}
    for _ in range(MAX_DEPTH + 5):  # within json's limits but deeper than load accepts
        tree = {"a": tree}
    write_raw(path, {"__checkpoint__.npy": header_bytes(tree)})
    with pytest.raises(ValueError, match="nested more than"):
        load(path)


def test_state_nested_deeper_than_load_accepts_is_refused_by_save(tmp_path):
    state: dict = {"w": np.ones(1)}
    for _ in range(MAX_DEPTH):
        state = {"a": state}
    with pytest.raises(ValueError, match=f"nested more than {MAX_DEPTH}"):
        save(state, tmp_path / "ckpt.npz")
    assert os.listdir(tmp_path) == []
    save(state["a"], tmp_path / "ckpt.npz")  # MAX_DEPTH dicts deep is fine
    assert load(tmp_path / "ckpt.npz")["a"]["a"]["a"] is not None


def test_header_pointing_an_array_at_another_member_is_refused(tmp_path):
    path = tmp_path / "ckpt.npz"
    write_raw(path, {"__checkpoint__.npy": header_bytes({"w": ["ndarray", "__checkpoint__"]}),
                     "w.npy": npy_bytes(np.zeros(2))})
    with pytest.raises(ValueError, match="malformed header at 'w'"):
        load(path)


def test_a_file_that_cannot_be_opened_is_its_os_error_not_called_truncated(tmp_path):
    with pytest.raises(IsADirectoryError):
        load(tmp_path)
    if os.geteuid() != 0:  # root reads anything
        path = tmp_path / "ckpt.npz"
        save(small_state(), path)
        path.chmod(0)
        with pytest.raises(PermissionError):
            load(path)
