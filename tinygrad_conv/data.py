"""MNIST: an IDX file reader, the dataset with a verified download, and a DataLoader.

IDX layout (http://yann.lecun.com/exdb/mnist/): a big-endian int32 magic ``0x00000TDD`` where
``T`` is the element type code (0x08 = uint8, ...) and ``DD`` the number of dimensions, then one
big-endian int32 per dimension, then exactly ``prod(dims)`` elements, big-endian.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from numbers import Real
from pathlib import Path

import numpy as np

__all__ = ["MIRRORS", "MNIST", "DataLoader", "read_idx"]

# Tried in turn; a file's URL is mirror + name + ".gz".
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

# (images, labels) per split, each with the published MD5 of its *uncompressed* content:
# the .gz bytes differ between mirrors and recompressed copies, the IDX bytes do not.
_FILES: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "train": (
        ("train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb"),
        ("train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624"),
    ),
    "test": (
        ("t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea"),
        ("t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637"),
    ),
}

# IDX type code -> big-endian element dtype.
_IDX_DTYPES: dict[int, str] = {
    0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8",
}
_MAX_DIMS = 64  # numpy's limit (NPY_MAXDIMS)
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


def _read_bytes(path: str | os.PathLike) -> bytes:
    """The content of ``path``, gunzipped when it starts with the gzip magic bytes."""
    with open(path, "rb") as f:
        content = f.read()
    if content[:2] != _GZIP_MAGIC:
        return content
    try:
        return gzip.decompress(content)
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"read_idx: {os.fspath(path)!r} is a corrupt or truncated gzip "
                         f"file ({e})") from e


def _parse_idx(content: bytes, path: str | os.PathLike) -> np.ndarray:
    """Parse IDX bytes into a native-endian array; ``path`` only names the file in errors."""
    name = os.fspath(path)
    if len(content) < 4:
        raise ValueError(f"read_idx: {name!r} is not an IDX file: {len(content)} bytes, "
                         f"expected at least a 4-byte magic number")
    zeros, type_code, ndim = content[:2], content[2], content[3]
    if zeros != b"\x00\x00" or type_code not in _IDX_DTYPES:
        raise ValueError(f"read_idx: {name!r} has a bad magic number 0x{content[:4].hex()}, "
                         f"expected 0x0000TTDD with type code TT in "
                         f"{sorted(f'0x{t:02x}' for t in _IDX_DTYPES)}")
    if not 1 <= ndim <= _MAX_DIMS:
        raise ValueError(f"read_idx: {name!r} declares {ndim} dimensions, expected 1 to "
                         f"{_MAX_DIMS} (the most a numpy array has)")
    header = 4 + 4 * ndim
    if len(content) < header:
        raise ValueError(f"read_idx: {name!r} is truncated in its header: {len(content)} "
                         f"bytes, expected {header} for {ndim} dimensions")
    shape = tuple(int(d) for d in np.frombuffer(content, dtype=">i4", count=ndim, offset=4))
    if any(d < 0 for d in shape):
        raise ValueError(f"read_idx: {name!r} has negative dimensions {shape}")
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = header + math.prod(shape) * dtype.itemsize
    if len(content) != expected:
        what = "truncated" if len(content) < expected else "followed by trailing bytes"
        raise ValueError(f"read_idx: {name!r} is {what}: {len(content)} bytes, expected "
                         f"{expected} (header {header} + shape {shape} x {dtype.itemsize})")
    array = np.frombuffer(content, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a writable, native-endian copy


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed (told apart by magic bytes, not by name).

    Returns an array of the file's shape, e.g. uint8 (N, 28, 28) for MNIST images. Raises
    ValueError naming the file when the magic number, dimensions or length are wrong.
    """
    return _parse_idx(_read_bytes(path), path)


def _download(name: str, md5: str, root: Path, mirrors: tuple[str, ...],
              timeout: float) -> Path:
    """Fetch ``name``.gz from the first mirror whose copy matches ``md5``; return its path.

    Each attempt streams into a hidden temporary file in ``root`` that is renamed only once
    verified, so an interrupted or corrupt download never leaves a file that looks complete.
    """
    final = root / f"{name}.gz"
    failures = []
    for mirror in mirrors:
        url = mirror + final.name
        fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{final.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as r:
                declared, received = r.headers.get("Content-Length"), 0
                while chunk := r.read(_CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                if declared is not None and received != int(declared):
                    raise ValueError(f"the connection closed after {received} of {declared} "
                                     f"bytes")
                out.flush()
                os.fsync(out.fileno())
            found = hashlib.md5(_read_bytes(tmp)).hexdigest()
            if found != md5:
                raise ValueError(f"MD5 of the uncompressed content is {found}, expected {md5}")
            os.replace(tmp, final)
            return final
        # URLError and timeouts are OSErrors, a malformed response an HTTPException
        except (OSError, ValueError, http.client.HTTPException) as e:
            failures.append(f"{url}: {e}")
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    tried = "".join(f"\n  {f}" for f in failures) or " (no mirrors given)"
    raise FileNotFoundError(f"MNIST: could not download {final.name}; tried:{tried}\n"
                            f"{_where_to_put_files(root)}")


def _where_to_put_files(root: Path) -> str:
    names = ", ".join(f"{n}.gz" for split in _FILES.values() for n, _ in split)
    return (f"Without network, put the four MNIST files ({names}; raw or gzipped) in "
            f"{os.fspath(root)!r}; a fresh clone of this repository has them in "
            f"examples/data/mnist/.")


class MNIST:
    """The MNIST digits: ``images`` uint8 (N, 28, 28), ``labels`` int64 (N,).

    Looks in ``root`` for the split's two IDX files (raw ``name`` or ``name.gz``), verifies the
    MD5 of their uncompressed content, and, when they are missing and ``download`` is true,
    fetches them from ``mirrors`` in turn. A file present but corrupt is an error, never
    silently replaced. ``mnist[i]`` is ``(image uint8 (28, 28), label int)``.
    """

    def __init__(self, root: str | os.PathLike, train: bool = True, download: bool = True,
                 mirrors: tuple[str, ...] = MIRRORS, timeout: float = 30.0) -> None:
        if timeout <= 0:
            raise ValueError(f"MNIST: timeout must be > 0 seconds, got {timeout}")
        self.root = Path(root)
        self.train = bool(train)
        (images_name, images_md5), (labels_name, labels_md5) = _FILES[
            "train" if self.train else "test"]
        images = self._load(images_name, images_md5, download, tuple(mirrors), timeout)
        labels = self._load(labels_name, labels_md5, download, tuple(mirrors), timeout)
        # The MD5s pin the content, so these hold unless the table above is wrong.
        assert images.dtype == np.uint8 and images.shape[1:] == (28, 28), images.shape
        assert labels.shape == images.shape[:1], (labels.shape, images.shape)
        self.images: np.ndarray = images
        self.labels: np.ndarray = labels.astype(np.int64)

    def _load(self, name: str, md5: str, download: bool, mirrors: tuple[str, ...],
              timeout: float) -> np.ndarray:
        candidates = [self.root / name, self.root / f"{name}.gz"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            if not download:
                raise FileNotFoundError(f"MNIST: {name}(.gz) not found in "
                                        f"{os.fspath(self.root)!r} and download=False. "
                                        f"{_where_to_put_files(self.root)}")
            self.root.mkdir(parents=True, exist_ok=True)
            path = _download(name, md5, self.root, mirrors, timeout)
        content = _read_bytes(path)
        found = hashlib.md5(content).hexdigest()
        if found != md5:
            raise ValueError(f"MNIST: {os.fspath(path)!r} is corrupt: MD5 of its uncompressed "
                             f"content is {found}, expected {md5}; delete it to download "
                             f"it again")
        return _parse_idx(content, path)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.images[index], int(self.labels[index])

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"MNIST(root={os.fspath(self.root)!r}, split={split!r}, n={len(self)})"



def _dataset_arrays(dataset) -> tuple[np.ndarray, np.ndarray]:
    """DataLoader's dataset: uint8 images (N, H, W) or (N, C, H, W), N integer labels."""
    images, labels = getattr(dataset, "images", None), getattr(dataset, "labels", None)
    if not isinstance(images, np.ndarray) or not isinstance(labels, np.ndarray):
        raise TypeError(f"DataLoader: dataset must have numpy arrays .images and .labels, "
                        f"got {type(dataset).__name__}")
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ValueError(f"DataLoader: dataset.images must be uint8 (N, H, W) or "
                         f"(N, C, H, W), got {images.dtype} {images.shape}")
    if labels.shape != images.shape[:1]:
        raise ValueError(f"DataLoader: dataset.labels must have shape {images.shape[:1]}, "
                         f"got {labels.shape}")
    if labels.dtype.kind not in "iu":  # int64 batches of float labels would truncate them
        raise TypeError(f"DataLoader: dataset.labels must be integer class indices, got "
                        f"dtype {labels.dtype}")
    return images, labels


def _normalize_pair(normalize) -> tuple[float, float] | None:
    """DataLoader's normalize: None, or (mean, std) as two floats with std > 0."""
    if normalize is None:
        return None
    if not isinstance(normalize, (tuple, list, np.ndarray)) or not all(
            isinstance(v, Real) and not isinstance(v, bool) for v in normalize):
        raise TypeError(f"DataLoader: normalize must be a pair of numbers (mean, std), "
                        f"got {normalize!r}")
    if len(normalize) != 2 or not (math.isfinite(normalize[0])
                                   and math.isfinite(normalize[1]) and normalize[1] > 0):
        raise ValueError(f"DataLoader: normalize must be (mean, std) with std > 0, "
                         f"got {normalize!r}")
    return (float(normalize[0]), float(normalize[1]))


class DataLoader:
    """Batches of ``(images float32 (B, C, H, W), labels int64 (B,))`` as numpy arrays.

    ``dataset`` is anything with ``images`` uint8 (N, H, W) or (N, C, H, W) and ``labels`` (N,),
    such as MNIST (C = 1). Pixels are scaled to [0, 1], then to ``(x - mean) / std`` when
    ``normalize=(mean, std)`` is given (MNIST's are about (0.1307, 0.3081)).

    With ``shuffle``, epoch ``e`` visits the samples in an order fixed by ``(seed, e)``. Each
    full pass advances ``epoch``; ``set_epoch(e, start_batch=b)`` resumes a stopped run at
    batch ``b`` of epoch ``e`` with exactly the batches it would have seen.
    """

    def __init__(self, dataset, batch_size: int, shuffle: bool = False,
                 seed: int | None = None, drop_last: bool = False,
                 normalize: tuple[float, float] | None = None) -> None:
        images, labels = _dataset_arrays(dataset)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
            raise TypeError(f"DataLoader: batch_size must be an int, got {batch_size!r}")
        if batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be >= 1, got {batch_size}")
        if seed is not None and (isinstance(seed, bool)
                                 or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"DataLoader: seed must be a non-negative int or None, got {seed!r}")
        normalize = _normalize_pair(normalize)
        self.images = images if images.ndim == 4 else images[:, None]
        self.labels = labels
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        # With no seed, draw one now, so the epochs of this loader still differ and repeat.
        self.seed = int(seed) if seed is not None else int(np.random.SeedSequence().entropy)
        self.drop_last = bool(drop_last)
        self.normalize = normalize
        self.epoch = 0
        self._start_batch = 0

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next iteration epoch ``epoch``, starting at its batch ``start_batch``."""
        for name, value in (("epoch", epoch), ("start_batch", start_batch)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"DataLoader.set_epoch: {name} must be an int, got {value!r}")
        if epoch < 0 or not 0 <= start_batch <= len(self):
            raise ValueError(f"DataLoader.set_epoch: need epoch >= 0 and 0 <= start_batch <= "
                             f"{len(self)}, got epoch={epoch}, start_batch={start_batch}")
        self.epoch, self._start_batch = int(epoch), int(start_batch)

    def order(self, epoch: int) -> np.ndarray:
        """The sample indices of epoch ``epoch`` in the order they are visited, int64 (N,)."""
        n = len(self.labels)
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        epoch, start = self.epoch, self._start_batch
        self._start_batch = 0
        order = self.order(epoch)
        for b in range(start, len(self)):
            index = order[b * self.batch_size:(b + 1) * self.batch_size]
            # x / 255 as torchvision's ToTensor does; x * (1 / 255) is an ulp off for some x
            x = self.images[index].astype(np.float32) / np.float32(255)
            if self.normalize is not None:
                mean, std = self.normalize
                x = (x - np.float32(mean)) / np.float32(std)
            yield x, self.labels[index].astype(np.int64)
        self.epoch = epoch + 1  # only a completed pass advances the epoch
