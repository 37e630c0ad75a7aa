"""tinygrad_conv.data: IDX files, MNIST from disk and from (local) mirrors, the DataLoader."""

import gzip
import hashlib
import http.server
import os
import re
import shutil
import socket
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tinygrad_conv.data import MNIST, DataLoader, read_idx

MNIST_DIR = Path(__file__).resolve().parent.parent / "examples" / "data" / "mnist"
TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def idx_bytes(array: np.ndarray, type_code: int) -> bytes:
    """An IDX file written from the spec, independently of the reader under test."""
    header = struct.pack(">HBB", 0, type_code, array.ndim)
    header += struct.pack(f">{array.ndim}i", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def error_naming(path) -> str:
    return re.escape(os.fspath(path))


# --- IDX ----------------------------------------------------------------------------------

@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("dtype, code, shape", [
    (np.uint8, 0x08, (5, 3, 4)),
    (np.uint8, 0x08, (7,)),
    (np.int8, 0x09, (2, 3)),
    (np.int16, 0x0B, (4, 1, 2, 3)),
    (np.int32, 0x0C, (6,)),
    (np.float32, 0x0D, (3, 3)),
    (np.float64, 0x0E, (2, 0, 5)),
])
def test_idx_round_trip_every_type_raw_and_gzip(tmp_path, dtype, code, shape, compress):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info is not None:
        array = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    else:
        array = rng.standard_normal(shape).astype(dtype)
    content = idx_bytes(array, code)
    path = tmp_path / "a.idx"
    path.write_bytes(gzip.compress(content) if compress else content)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert out.shape == shape
    np.testing.assert_array_equal(out, array)
    out[...] = 0  # the result is an ordinary writable array


def test_idx_format_is_told_by_magic_bytes_not_by_file_name(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    gz_named_raw = tmp_path / "really-raw.gz"
    gz_named_raw.write_bytes(idx_bytes(array, 0x08))
    raw_named_gz = tmp_path / "really-gzip.idx"
    raw_named_gz.write_bytes(gzip.compress(idx_bytes(array, 0x08)))
    np.testing.assert_array_equal(read_idx(gz_named_raw), array)
    np.testing.assert_array_equal(read_idx(raw_named_gz), array)


GOOD = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4), 0x08)


@pytest.mark.parametrize("content, message", [
    (b"", "not an IDX file"),
    (b"\x00\x00", "not an IDX file"),
    (b"\x01\x00" + GOOD[2:], "bad magic number"),
    (GOOD[:2] + b"\x07" + GOOD[3:], "bad magic number"),           # unknown type code
    (GOOD[:3] + b"\x00" + GOOD[4:], "0 dimensions"),
    (GOOD[:3] + b"\x09" + GOOD[4:], "truncated"),                  # ndim 9: header too short
    (GOOD[:3] + b"\x02" + GOOD[4:], "trailing bytes"),             # ndim 2 of a 3-d file
    (GOOD[:3] + b"\x04" + GOOD[4:], "truncated"),                  # ndim 4 of a 3-d file
    (GOOD[:10], "truncated in its header"),
    (GOOD[:-1], "truncated"),
    (GOOD + b"\x00", "trailing bytes"),
    (GOOD[:4] + struct.pack(">i", -2) + GOOD[8:], "negative"),
    (GOOD[:4] + struct.pack(">3i", 2 ** 31 - 1, 2 ** 31 - 1, 2 ** 31 - 1) + GOOD[16:],
     "truncated"),
    (gzip.compress(GOOD)[:-6], "corrupt or truncated gzip"),
    (gzip.compress(GOOD)[:-8] + b"\x00" * 8, "corrupt or truncated gzip"),  # bad CRC
    (gzip.compress(GOOD[:-3]), "truncated"),
], ids=["empty", "short", "magic", "type-code", "ndim-0", "ndim-9", "ndim-2", "ndim-4",
        "header-cut", "payload-cut", "trailing", "negative-dim", "huge-dims", "gzip-cut",
        "gzip-crc", "gzip-of-truncated"])
def test_idx_corruption_is_a_value_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "broken-idx3-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=error_naming(path)) as info:
        read_idx(path)
    assert message in str(info.value)


def test_idx_text_file_named_gz_is_a_value_error_naming_the_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_text("<html>404 Not Found</html>")
    with pytest.raises(ValueError, match=error_naming(path)):
        read_idx(path)


# --- MNIST from disk ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnist_train():
    return MNIST(MNIST_DIR, train=True, download=False)


@pytest.fixture(scope="module")
def mnist_test():
    return MNIST(MNIST_DIR, train=False, download=False)


def raw_mnist(name: str, header: int) -> np.ndarray:
    """The file's payload read with nothing but gzip and the known header size."""
    return np.frombuffer(gzip.decompress((MNIST_DIR / name).read_bytes())[header:], np.uint8)


def test_mnist_train_split_from_repository_files(mnist_train):
    assert len(mnist_train) == 60000
    assert mnist_train.images.shape == (60000, 28, 28) and mnist_train.images.dtype == np.uint8
    assert mnist_train.labels.shape == (60000,) and mnist_train.labels.dtype == np.int64
    assert mnist_train.labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert np.bincount(mnist_train.labels).tolist() == [
        5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    np.testing.assert_array_equal(mnist_train.images.ravel(),
                                  raw_mnist("train-images-idx3-ubyte.gz", 16))
    image, label = mnist_train[0]
    assert image.shape == (28, 28) and label == 5 and type(label) is int


def test_mnist_test_split_from_repository_files(mnist_test):
    assert len(mnist_test) == 10000
    assert mnist_test.images.shape == (10000, 28, 28)
    assert mnist_test.labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert mnist_test.labels.min() == 0 and mnist_test.labels.max() == 9
    assert mnist_test.images.max() == 255 and mnist_test.images.min() == 0
    np.testing.assert_array_equal(mnist_test.labels, raw_mnist("t10k-labels-idx1-ubyte.gz", 8))


def copy_test_split(root: Path) -> None:
    root.mkdir(exist_ok=True)
    for name in TEST_FILES:
        shutil.copyfile(MNIST_DIR / name, root / name)


def test_mnist_reads_uncompressed_files_too(tmp_path, mnist_test):
    for name in TEST_FILES:
        (tmp_path / name.removesuffix(".gz")).write_bytes(
            gzip.decompress((MNIST_DIR / name).read_bytes()))
    data = MNIST(tmp_path, train=False, download=False)
    np.testing.assert_array_equal(data.images, mnist_test.images)
    np.testing.assert_array_equal(data.labels, mnist_test.labels)


def test_mnist_md5_mismatch_names_the_file_and_keeps_it(tmp_path):
    copy_test_split(tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(labels.read_bytes()))
    content[8] = (content[8] + 1) % 10  # still a valid IDX file, with one label changed
    labels.write_bytes(gzip.compress(bytes(content)))
    for download in (False, True):
        with pytest.raises(ValueError, match=error_naming(labels)) as info:
            MNIST(tmp_path, train=False, download=download, mirrors=())
        assert "27ae3e4e09519cfbb04c329615203637" in str(info.value)
        assert hashlib.md5(gzip.decompress(labels.read_bytes())).digest() == \
            hashlib.md5(bytes(content)).digest()


def test_mnist_missing_without_download_says_where_to_put_files(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        MNIST(tmp_path / "nowhere", train=True, download=False)
    message = str(info.value)
    assert os.fspath(tmp_path / "nowhere") in message
    assert "train-images-idx3-ubyte.gz" in message and "examples/data/mnist" in message


# --- MNIST download, against a real HTTP server on 127.0.0.1 ------------------------------

class Server:
    """Serves ``routes`` (URL path -> bytes) over HTTP in a thread that stops by itself."""

    def __init__(self, routes: dict[str, bytes], lifetime: float = 30.0):
        routes = dict(routes)
        self.requests: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(handler):  # noqa: N805
                self.requests.append(handler.path)
                body = routes.get(handler.path)
                if body is None:
                    handler.send_error(404)
                    return
                handler.send_response(200)
                # under /cut/ the body stops short of its declared length, as a dropped link
                declared = len(body) + 1000 * handler.path.startswith("/cut/")
                handler.send_header("Content-Length", str(declared))
                handler.end_headers()
                handler.wfile.write(body)

            def log_message(handler, *args):  # noqa: N805
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.timeout = 0.1
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.stop = threading.Event()
        deadline = time.monotonic() + lifetime

        def serve():
            while not self.stop.is_set() and time.monotonic() < deadline:
                self.httpd.handle_request()
            self.httpd.server_close()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)


@pytest.fixture
def serve():
    servers = []

    def start(routes):
        servers.append(Server(routes))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def good_routes(prefix: str) -> dict[str, bytes]:
    return {f"{prefix}{name}": (MNIST_DIR / name).read_bytes() for name in TEST_FILES}


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_download_fetches_verifies_and_renames(tmp_path, serve, mnist_test):
    server = serve(good_routes("/mnist/"))
    root = tmp_path / "new" / "dir"
    data = MNIST(root, train=False, mirrors=(server.url + "/mnist/",), timeout=5)
    np.testing.assert_array_equal(data.images, mnist_test.images)
    np.testing.assert_array_equal(data.labels, mnist_test.labels)
    for name in TEST_FILES:
        assert (root / name).read_bytes() == (MNIST_DIR / name).read_bytes()
    assert leftovers(root) == []
    assert sorted(server.requests) == sorted(f"/mnist/{n}" for n in TEST_FILES)
    MNIST(root, train=False, mirrors=(server.url + "/mnist/",), timeout=5)
    assert len(server.requests) == 2  # the second time, nothing is downloaded


@pytest.mark.parametrize("corrupt", ["one-pixel", "not-gzip", "truncated-gzip"])
def test_download_of_corrupt_file_fails_and_leaves_no_file(tmp_path, serve, corrupt):
    routes = good_routes("/m/")
    key = f"/m/{TEST_FILES[0]}"
    if corrupt == "one-pixel":  # a valid gzip whose content fails the MD5
        content = bytearray(gzip.decompress(routes[key]))
        content[1000] ^= 0xFF
        routes[key] = gzip.compress(bytes(content), compresslevel=1)
    elif corrupt == "not-gzip":
        routes[key] = b"<html>Access Denied</html>"
    else:
        routes[key] = routes[key][: len(routes[key]) // 2]
    server = serve(routes)
    with pytest.raises(FileNotFoundError) as info:
        MNIST(tmp_path, train=False, mirrors=(server.url + "/m/",), timeout=5)
    message = str(info.value)
    assert f"{server.url}/m/{TEST_FILES[0]}" in message and os.fspath(tmp_path) in message
    assert not (tmp_path / TEST_FILES[0]).exists()
    assert leftovers(tmp_path) == []


def test_download_falls_through_a_404_mirror_to_the_next(tmp_path, serve, mnist_test):
    server = serve(good_routes("/second/"))
    mirrors = (server.url + "/first/", server.url + "/second/")
    data = MNIST(tmp_path, train=False, mirrors=mirrors, timeout=5)
    np.testing.assert_array_equal(data.labels, mnist_test.labels)
    assert server.requests[:2] == [f"/first/{TEST_FILES[0]}", f"/second/{TEST_FILES[0]}"]
    assert leftovers(tmp_path) == []


def test_download_cut_short_falls_through_and_leaves_no_partial_file(tmp_path, serve):
    routes = good_routes("/cut/")
    routes.update(good_routes("/good/"))
    server = serve(routes)
    with pytest.raises(FileNotFoundError, match="closed after"):
        MNIST(tmp_path, train=False, mirrors=(server.url + "/cut/",), timeout=5)
    assert list(tmp_path.iterdir()) == []
    data = MNIST(tmp_path, train=False, mirrors=(server.url + "/cut/", server.url + "/good/"),
                 timeout=5)
    assert data.labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert leftovers(tmp_path) == []


def test_download_falls_through_a_corrupt_mirror_to_the_next(tmp_path, serve, mnist_test):
    routes = good_routes("/good/")
    routes.update({f"/bad/{n}": b"garbage" for n in TEST_FILES})
    server = serve(routes)
    data = MNIST(tmp_path, train=False, mirrors=(server.url + "/bad/", server.url + "/good/"),
                 timeout=5)
    np.testing.assert_array_equal(data.images, mnist_test.images)


def test_download_times_out_on_a_silent_mirror_and_falls_through(tmp_path, serve):
    server = serve(good_routes("/m/"))
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        mirrors = (f"http://127.0.0.1:{silent.getsockname()[1]}/", server.url + "/m/")
        start = time.monotonic()
        data = MNIST(tmp_path, train=False, mirrors=mirrors, timeout=0.5)
        assert time.monotonic() - start < 10
    assert data.labels[:5].tolist() == [7, 2, 1, 0, 4]


def test_no_network_error_says_where_to_put_the_files(tmp_path):
    url = closed_port_url()
    with pytest.raises(FileNotFoundError) as info:
        MNIST(tmp_path, train=True, mirrors=(url,), timeout=2)
    message = str(info.value)
    assert url + "train-images-idx3-ubyte.gz" in message
    assert "put the four MNIST files" in message and os.fspath(tmp_path) in message
    for name in ("train-images", "train-labels", "t10k-images", "t10k-labels"):
        assert name in message
    assert leftovers(tmp_path) == [] and list(tmp_path.iterdir()) == []


def test_mnist_rejects_nonpositive_timeout(tmp_path):
    with pytest.raises(ValueError, match="timeout"):
        MNIST(tmp_path, timeout=0)


# --- DataLoader ---------------------------------------------------------------------------

class Indexed:
    """n tiny images whose label is their index, so batches show which samples they hold."""

    def __init__(self, n: int, size: int = 4):
        self.images = (np.arange(n * size * size) % 256).astype(np.uint8).reshape(n, size, size)
        self.labels = np.arange(n, dtype=np.int64)


def test_loader_batches_match_torch_scaling_and_normalisation(mnist_test):
    for normalize in (None, (0.1307, 0.3081)):
        loader = DataLoader(mnist_test, batch_size=100, normalize=normalize)
        x, y = next(iter(loader))
        assert x.shape == (100, 1, 28, 28) and x.dtype == np.float32
        assert y.shape == (100,) and y.dtype == np.int64
        expected = torch.from_numpy(mnist_test.images[:100]).unsqueeze(1).float().div(255)
        if normalize is None:
            assert x.min() == 0.0 and x.max() == 1.0
        else:
            expected = (expected - normalize[0]) / normalize[1]
        np.testing.assert_array_equal(x, expected.numpy())
        np.testing.assert_array_equal(y, mnist_test.labels[:100])


@pytest.mark.parametrize("n, batch, drop_last, sizes", [
    (10, 3, False, [3, 3, 3, 1]),
    (10, 3, True, [3, 3, 3]),
    (9, 3, True, [3, 3, 3]),
    (10, 10, False, [10]),
    (10, 32, False, [10]),
    (10, 32, True, []),
])
def test_loader_len_and_batch_sizes(n, batch, drop_last, sizes):
    loader = DataLoader(Indexed(n), batch, shuffle=True, seed=1, drop_last=drop_last)
    assert len(loader) == len(sizes)
    assert [len(y) for _, y in loader] == sizes


@pytest.mark.parametrize("shuffle", [False, True])
def test_loader_visits_every_sample_exactly_once_per_epoch(shuffle):
    data = Indexed(103)
    loader = DataLoader(data, 10, shuffle=shuffle, seed=7)
    for _ in range(3):
        seen = []
        for x, y in loader:
            np.testing.assert_array_equal(x[:, 0] * 255, data.images[y].astype(np.float32))
            seen.extend(y.tolist())
        assert sorted(seen) == list(range(103))
        if not shuffle:
            assert seen == list(range(103))


def epoch_labels(loader) -> list[int]:
    return [i for _, y in loader for i in y.tolist()]


def test_loader_order_is_fixed_by_seed_and_epoch():
    data = Indexed(50)
    a, b = DataLoader(data, 8, shuffle=True, seed=3), DataLoader(data, 8, shuffle=True, seed=3)
    a_epochs = [epoch_labels(a) for _ in range(3)]
    assert a_epochs == [epoch_labels(b) for _ in range(3)]
    assert a.epoch == 3
    assert len({tuple(e) for e in a_epochs}) == 3  # every epoch is a new order
    assert epoch_labels(DataLoader(data, 8, shuffle=True, seed=4)) != a_epochs[0]
    c = DataLoader(data, 8, shuffle=True, seed=3)
    c.set_epoch(2)
    assert epoch_labels(c) == a_epochs[2]
    unseeded = DataLoader(data, 8, shuffle=True)
    assert epoch_labels(unseeded) != epoch_labels(unseeded)


def test_loader_resumes_mid_epoch_with_the_same_batches():
    data = Indexed(40)
    full = DataLoader(data, 6, shuffle=True, seed=11)
    full.set_epoch(1)
    expected = [(x.copy(), y.copy()) for x, y in full]
    stopped = DataLoader(data, 6, shuffle=True, seed=11)
    stopped.set_epoch(1)
    for step, _ in enumerate(stopped):
        if step == 2:
            break
    assert stopped.epoch == 1  # an interrupted pass does not advance the epoch
    resumed = DataLoader(data, 6, shuffle=True, seed=11)
    resumed.set_epoch(1, start_batch=3)
    rest = list(resumed)
    assert len(rest) == len(expected) - 3
    for (x, y), (ex, ey) in zip(rest, expected[3:], strict=True):
        np.testing.assert_array_equal(x, ex)
        np.testing.assert_array_equal(y, ey)
    assert resumed.epoch == 2
    assert len(list(resumed)) == len(expected)  # start_batch applies to one pass only


@pytest.mark.parametrize("kwargs, error", [
    ({"batch_size": 0}, ValueError),
    ({"batch_size": -3}, ValueError),
    ({"batch_size": 2.5}, TypeError),
    ({"batch_size": True}, TypeError),
    ({"batch_size": 4, "seed": -1}, ValueError),
    ({"batch_size": 4, "seed": 1.5}, ValueError),
    ({"batch_size": 4, "normalize": (0.5, 0.0)}, ValueError),
    ({"batch_size": 4, "normalize": (0.5,)}, ValueError),
])
def test_loader_rejects_bad_arguments(kwargs, error):
    bad = [k for k in kwargs if k != "batch_size"] or ["batch_size"]  # the one that is wrong
    with pytest.raises(error, match=f"DataLoader.*{bad[0]}"):
        DataLoader(Indexed(10), **kwargs)


def test_loader_rejects_bad_datasets_and_epochs():
    with pytest.raises(TypeError, match="DataLoader.*dataset"):
        DataLoader(object(), 4)
    bad = Indexed(10)
    bad.images = bad.images.astype(np.float32)
    with pytest.raises(ValueError, match="uint8"):
        DataLoader(bad, 4)
    bad = Indexed(10)
    bad.labels = bad.labels[:9]
    with pytest.raises(ValueError, match="labels"):
        DataLoader(bad, 4)
    loader = DataLoader(Indexed(10), 4)
    with pytest.raises(ValueError, match="set_epoch"):
        loader.set_epoch(-1)
    with pytest.raises(ValueError, match="set_epoch"):
        loader.set_epoch(0, start_batch=4)
