"""Checkpoints: a nested dict of arrays and scalars in one ``.npz``, written atomically.

The file is an ordinary npz: each array is a member named by its key path joined with "/"
(``model/conv1/weight``), and the member ``__checkpoint__`` holds a UTF-8 JSON header with the
format name, its version and the tree of keys, in which Python scalars are stored by value
(JSON keeps ints of any size and floats exactly) and arrays by member name.
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["load", "save"]

FORMAT = "tinygrad_conv.checkpoint"
VERSION = 1
_HEADER = "__checkpoint__"
_SCALARS = {bool: "bool", int: "int", float: "float", str: "str"}
_TYPES = {kind: t for t, kind in _SCALARS.items()}
MAX_DEPTH = 100  # dicts within dicts; deeper would overflow the recursion of json and _decode
# What a damaged zip can make zipfile, zlib or numpy's .npy reader raise: each means "corrupt".
_READ_ERRORS = (ValueError, OSError, EOFError, KeyError, IndexError, OverflowError, TypeError,
                SyntaxError, NotImplementedError, RuntimeError, UnicodeDecodeError, zlib.error,
                struct.error, zipfile.BadZipFile)


def _key_problem(key: str, path: str) -> str | None:
    """Why ``key`` cannot name a zip member that reads back as itself everywhere, or None."""
    # zip member names end at a NUL, and Windows reads a backslash as a path separator
    if not key or "/" in key or "\\" in key or "\0" in key or path == _HEADER:
        return f"key {path!r} is empty, contains '/', '\\' or a NUL byte, or is reserved"
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return f"key {path!r} is not valid Unicode (it holds a lone surrogate)"
    return None


def _encode(state: dict, prefix: str, arrays: dict[str, np.ndarray], depth: int = 1) -> dict:
    """The JSON tree of ``state``; its arrays are added to ``arrays`` under their key paths."""
    if depth > MAX_DEPTH:
        raise ValueError(f"save: {prefix!r} is nested more than {MAX_DEPTH} dicts deep")
    tree = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise TypeError(f"save: keys must be str, got {type(key).__name__} {key!r} "
                            f"under {prefix or 'the top level'!r}")
        path = f"{prefix}/{key}" if prefix else key
        problem = _key_problem(key, path)
        if problem:
            raise ValueError(f"save: {problem}")
        if isinstance(value, dict):
            tree[key] = _encode(value, path, arrays, depth + 1)
        elif isinstance(value, np.ndarray):
            if value.dtype.hasobject or value.dtype.names is not None:
                raise TypeError(f"save: array {path!r} has dtype {value.dtype}; object arrays "
                                f"need pickle and structured ones are not supported")
            arrays[path] = value
            tree[key] = ["ndarray", path]
        elif type(value) in _SCALARS:  # exact types: a numpy scalar is not a float here
            tree[key] = [_SCALARS[type(value)], value]
        else:
            raise TypeError(f"save: {path!r} is a {type(value).__name__}; leaves must be numpy "
                            f"arrays or Python int/float/bool/str (use .item() or np.asarray "
                            f"for numpy scalars)")
    return tree


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``state`` to ``path`` atomically: ``path`` holds the old file or the new, whole.

    ``state`` is a dict with str keys whose values are dicts of the same kind, numpy arrays or
    Python int/float/bool/str, e.g. ``{"model": ..., "optimizer": ..., "epoch": 3}``. Keys are
    non-empty strings without "/", "\\" or NUL, nested at most MAX_DEPTH dicts deep; everything
    is checked before the file is touched.
    """
    if not isinstance(state, dict):
        raise TypeError(f"save: state must be a dict, got {type(state).__name__}")
    arrays: dict[str, np.ndarray] = {}
    tree = _encode(state, "", arrays)
    header = json.dumps({"format": FORMAT, "version": VERSION, "tree": tree})
    arrays[_HEADER] = np.frombuffer(header.encode("utf-8"), dtype=np.uint8)

    path = Path(path)
    directory = path.parent
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):  # not on Windows before Python 3.13 (no POSIX modes there)
                os.fchmod(f.fileno(), 0o644)  # mkstemp's 0o600 would make every checkpoint private
            # What np.savez does, without its reserved argument names ("file", "arr_0", ...).
            with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED) as archive:
                for key, array in arrays.items():
                    with archive.open(f"{key}.npy", mode="w", force_zip64=True) as member:
                        np.lib.format.write_array(member, array, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.remove(tmp)
        raise
    _fsync_dir(directory)


def _read_array(archive: zipfile.ZipFile, path: str, name: str, file_size: int) -> np.ndarray:
    """The array stored under key path ``path``, its sizes checked before anything is allocated.

    Members are read by their exact names: numpy's NpzFile also accepts a name without ".npy",
    which swaps keys "x" and "x.npy" and gives the header to a key "__checkpoint__.npy".
    """
    member = f"{path}.npy"
    try:
        info = archive.getinfo(member)
    except KeyError:
        raise ValueError(f"load: {name!r} is corrupt: cannot read {path!r}, which the header "
                         f"lists: the file has no member {member!r}") from None
    if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size \
            or info.header_offset + info.compress_size > file_size:
        raise ValueError(f"load: {name!r} is corrupt: member {member!r} claims "
                         f"{info.file_size} bytes (method {info.compress_type}) that the "
                         f"{file_size}-byte file cannot hold uncompressed")
    try:
        with archive.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f".npy format version {version} is not one save writes")
            if dtype.hasobject:
                raise ValueError(f"dtype {dtype} needs pickle")
            size = math.prod(shape) * dtype.itemsize
            if size != info.file_size - f.tell():
                raise ValueError(f"its header says shape {shape} of {dtype} ({size} bytes) but "
                                 f"it holds {info.file_size - f.tell()} bytes of data")
            data = f.read()  # to the end: zipfile checks the CRC there
    except _READ_ERRORS as e:
        raise ValueError(f"load: {name!r} is corrupt: cannot read {path!r} "
                         f"({type(e).__name__}: {e})") from e
    if len(data) != size:
        raise ValueError(f"load: {name!r} is corrupt: {path!r} has {len(data)} bytes of data, "
                         f"expected {size}")
    array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran_order else "C")
    return array.copy(order="K")  # writable, and no longer tied to the bytes read


def _decode(tree: dict, archive: zipfile.ZipFile, name: str, file_size: int, prefix: str = "",
            depth: int = 1) -> dict:
    """Rebuild the nested dict from the header's tree, reading arrays from ``archive``."""
    if depth > MAX_DEPTH:
        raise ValueError(f"load: {name!r} has a malformed header: {prefix!r} is nested more "
                         f"than {MAX_DEPTH} dicts deep")
    state = {}
    for key, node in tree.items():
        path = f"{prefix}/{key}" if prefix else key
        problem = _key_problem(key, path)
        if problem:
            raise ValueError(f"load: {name!r} has a malformed header: {problem}")
        if isinstance(node, dict):
            state[key] = _decode(node, archive, name, file_size, path, depth + 1)
        elif isinstance(node, list) and node == ["ndarray", path]:
            state[key] = _read_array(archive, path, name, file_size)
        elif (isinstance(node, list) and len(node) == 2 and node[0] in _TYPES
              and type(node[1]) is _TYPES[node[0]]):  # JSON gives back each type exactly
            state[key] = node[1]
        else:
            raise ValueError(f"load: {name!r} has a malformed header at {path!r}: {node!r}")
    return state


def _read_header(archive: zipfile.ZipFile, name: str, file_size: int) -> dict:
    """The header's JSON as a dict, checked down to its tree of keys."""
    if f"{_HEADER}.npy" not in archive.namelist():
        entries = sorted(archive.namelist())[:5]
        raise ValueError(f"load: {name!r} is an npz but not a tinygrad_conv checkpoint "
                         f"(no {_HEADER!r} entry; its entries: {entries})")
    raw = _read_array(archive, _HEADER, name, file_size)
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"load: {name!r} has an unreadable header ({e})") from e
    except RecursionError:
        raise ValueError(f"load: {name!r} has a malformed header: nested too deeply") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"load: {name!r} is not a tinygrad_conv checkpoint: its header "
                         f"names no format {FORMAT!r}")
    version = header.get("version")
    if type(version) is not int or version != VERSION:   # JSON's true and 1.0 equal 1 in Python
        raise ValueError(f"load: {name!r} is checkpoint format version "
                         f"{version!r}; this code reads version {VERSION}")
    if not isinstance(header.get("tree"), dict):
        raise ValueError(f"load: {name!r} has a malformed header: no tree of keys")
    return header


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by ``save``: the same nested dict, leaves of the same types.

    Raises ValueError naming the file and what is wrong when it is truncated, corrupt, not an
    npz, or an npz that ``save`` did not write; OSError (FileNotFoundError, PermissionError,
    ...) when it cannot be opened.
    """
    name = os.fspath(path)
    with open(path, "rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        if f.read(6) == b"\x93NUMPY":
            raise ValueError(f"load: {name!r} is a single .npy array, not an npz checkpoint")
        f.seek(0)
        try:
            archive = zipfile.ZipFile(f)
        except _READ_ERRORS as e:
            raise ValueError(f"load: {name!r} is not an npz checkpoint, or is truncated "
                             f"({type(e).__name__}: {e})") from e
        with archive:
            header = _read_header(archive, name, file_size)
            return _decode(header["tree"], archive, name, file_size)
