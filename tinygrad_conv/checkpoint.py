"""Checkpoints: a nested dict of arrays and scalars in one ``.npz``, written atomically.

The file is an ordinary npz: each array is a member named by its key path joined with "/"
(``model/conv1/weight``), and the member ``__checkpoint__`` holds a UTF-8 JSON header with the
format name, its version and the tree of keys, in which Python scalars are stored by value
(JSON keeps ints of any size and floats exactly) and arrays by member name.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["load", "save"]

FORMAT = "tinygrad_conv.checkpoint"
VERSION = 1
_HEADER = "__checkpoint__"
_SCALARS = {bool: "bool", int: "int", float: "float", str: "str"}
_TYPES = {kind: t for t, kind in _SCALARS.items()}


def _encode(state: dict, prefix: str, arrays: dict[str, np.ndarray]) -> dict:
    """The JSON tree of ``state``; its arrays are added to ``arrays`` under their key paths."""
    tree = {}
    for key, value in state.items():
        path = f"{prefix}/{key}" if prefix else key
        if not isinstance(key, str):
            raise TypeError(f"save: keys must be str, got {type(key).__name__} {key!r} "
                            f"under {prefix or 'the top level'!r}")
        if not key or "/" in key or path == _HEADER:
            raise ValueError(f"save: key {path!r} is empty, contains '/' or is reserved")
        if isinstance(value, dict):
            tree[key] = _encode(value, path, arrays)
        elif isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise TypeError(f"save: array {path!r} has dtype object, which cannot be "
                                f"stored without pickle")
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
    Python int/float/bool/str, e.g. ``{"model": ..., "optimizer": ..., "epoch": 3}``.
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


def _member(npz, key: str, name: str) -> np.ndarray:
    try:
        return npz[key]
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise ValueError(f"load: {name!r} is corrupt: cannot read {key!r} "
                         f"({type(e).__name__}: {e})") from e


def _decode(tree: dict, npz, name: str) -> dict:
    """Rebuild the nested dict from the header's tree, reading arrays from ``npz``."""
    state = {}
    for key, node in tree.items():
        if isinstance(node, dict):
            state[key] = _decode(node, npz, name)
        elif isinstance(node, list) and len(node) == 2 and node[0] == "ndarray":
            state[key] = _member(npz, node[1], name)
        elif (isinstance(node, list) and len(node) == 2 and node[0] in _TYPES
              and type(node[1]) is _TYPES[node[0]]):  # JSON gives back each type exactly
            state[key] = node[1]
        else:
            raise ValueError(f"load: {name!r} has a malformed header at {key!r}: {node!r}")
    return state


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by ``save``: the same nested dict, leaves of the same types.

    Raises ValueError naming the file when it is truncated, corrupt, not an npz, or an npz
    that ``save`` did not write; FileNotFoundError when it does not exist.
    """
    name = os.fspath(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"load: {name!r} is not an npz checkpoint, or is truncated "
                         f"({type(e).__name__}: {e})") from e
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"load: {name!r} is a single .npy array, not an npz checkpoint")
    with npz:
        if _HEADER not in npz.files:
            raise ValueError(f"load: {name!r} is an npz but not a tinygrad_conv checkpoint "
                             f"(no {_HEADER!r} entry; its entries: {sorted(npz.files)[:5]})")
        try:
            header = json.loads(_member(npz, _HEADER, name).tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"load: {name!r} has an unreadable header ({e})") from e
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ValueError(f"load: {name!r} is not a tinygrad_conv checkpoint: its header "
                             f"names no format {FORMAT!r}")
        if header.get("version") != VERSION:
            raise ValueError(f"load: {name!r} is checkpoint format version "
                             f"{header.get('version')!r}; this code reads version {VERSION}")
        if not isinstance(header.get("tree"), dict):
            raise ValueError(f"load: {name!r} has a malformed header: no tree of keys")
        return _decode(header["tree"], npz, name)
