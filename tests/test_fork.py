"""A process forked after the kernels ran (os.fork, or a multiprocessing.Pool with the fork
start method, the Linux default) can run every kernel: GNU OpenMP's thread pool does not survive
fork, so the child drops to one thread instead of waiting forever for workers that are gone.

Each scenario runs as a script in its own process group under a timeout, so a hang fails the
test (and is killed, children included) instead of hanging the suite.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tinygrad_conv import _threads

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60

# Runs conv2d, max_pool2d and a Linear big enough for the parallel matmul path on 2 threads, so
# the OpenMP pool has started before anything forks; `results()` runs them again.
PRELUDE = textwrap.dedent("""
    import multiprocessing, os, sys
    import numpy as np
    import tinygrad_conv
    from tinygrad_conv import Tensor, functional as F

    tinygrad_conv.set_num_threads(2)
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((8, 3, 20, 20)), dtype=np.float32)
    w = Tensor(rng.standard_normal((6, 3, 3, 3)), dtype=np.float32)
    a = Tensor(rng.standard_normal((256, 300)), dtype=np.float32)
    lw = Tensor(rng.standard_normal((200, 300)), dtype=np.float32)

    def results(_=None):
        conv = F.conv2d(x, w, stride=1, padding=1)
        return [conv.numpy(), F.max_pool2d(conv, 2).numpy(), F.linear(a, lw).numpy()]

    expected = results()
""")


def _run(body: str) -> str:
    """Run PRELUDE + body in a fresh interpreter; fail (killing its whole group) on a hang."""
    script = PRELUDE + textwrap.dedent(body)
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = child.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)  # the forked children too
        child.communicate()
        pytest.fail(f"the forked child hung: no answer within {TIMEOUT} s")
    assert child.returncode == 0, err
    return out


def test_os_fork_child_runs_every_kernel_after_the_parent_ran_them():
    out = _run("""
        pid = os.fork()
        if pid == 0:
            ok = all(np.array_equal(r, e) for r, e in zip(results(), expected))
            print("child", tinygrad_conv.get_num_threads(), ok, flush=True)
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        print("parent", tinygrad_conv.get_num_threads())
    """)
    threads = 2 if _threads.HAVE_OPENMP else 1
    assert out.split("\n")[:2] == ["child 1 True", f"parent {threads}"]


def test_fork_pool_workers_run_the_kernels():
    out = _run("""
        with multiprocessing.get_context("fork").Pool(2) as pool:
            answers = pool.map(results, range(4))
        for answer in answers:
            assert all(np.array_equal(r, e) for r, e in zip(answer, expected))
        print("pool ok", len(answers))
    """)
    assert out.strip() == "pool ok 4"


@pytest.mark.skipif(not _threads.HAVE_OPENMP or _threads.OPENMP_SURVIVES_FORK,
                    reason="only GNU OpenMP loses its threads in a fork() child")
def test_forked_child_refuses_more_threads_instead_of_hanging():
    out = _run("""
        pid = os.fork()
        if pid == 0:
            try:
                tinygrad_conv.set_num_threads(2)
            except RuntimeError as e:
                print("refused:", e, flush=True)
                tinygrad_conv.set_num_threads(1)   # one thread stays allowed
                os._exit(0)
            os._exit(1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
    """)
    assert out.startswith("refused: set_num_threads: this process is a fork() child")
    assert "got n=2" in out and "'spawn'" in out


def test_set_num_threads_takes_numpy_ints_like_every_other_int_argument():
    import numpy as np

    before = _threads.get_num_threads()
    try:
        _threads.set_num_threads(np.int64(1))
        assert _threads.get_num_threads() == 1
    finally:
        _threads.set_num_threads(before)
