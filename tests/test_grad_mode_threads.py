"""Grad mode and anomaly mode belong to a thread, as in PyTorch: an evaluation thread inside
`no_grad()` does not stop a training thread from recording, exits in any interleaving restore
each thread's own mode, and a new thread starts with grad mode on and anomaly mode off.

Events force each interleaving, so every run checks the same order of events.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tinygrad_conv import Tensor, detect_anomaly, is_grad_enabled, no_grad

TIMEOUT = 30


def run_in_thread(body) -> threading.Thread:
    """Start `body` in a thread; its exception (if any) is re-raised by `join_ok`."""
    def target():
        try:
            body()
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            errors.append(e)
    errors: list[BaseException] = []
    thread = threading.Thread(target=target, daemon=True)
    thread.errors = errors
    thread.start()
    return thread


def join_ok(thread: threading.Thread) -> None:
    thread.join(TIMEOUT)
    assert not thread.is_alive(), "the thread did not finish"
    if thread.errors:
        raise thread.errors[0]


def wait(event: threading.Event) -> None:
    assert event.wait(TIMEOUT), "an event never came"


def training_step() -> np.ndarray:
    w = Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    x = Tensor(np.ones((4, 3)))
    loss = (x @ w.T).relu().sum()
    loss.backward()  # raises if the ops were not recorded
    return w.grad


def test_no_grad_in_one_thread_leaves_training_in_another_recording():
    inside, done = threading.Event(), threading.Event()

    def evaluation():
        with no_grad():
            inside.set()
            wait(done)
            assert not is_grad_enabled()
            assert not (Tensor([1.0], requires_grad=True) * 2).requires_grad

    evaluator = run_in_thread(evaluation)
    wait(inside)
    try:
        assert is_grad_enabled()
        for _ in range(50):
            np.testing.assert_array_equal(training_step(), np.full((2, 3), 4.0))
    finally:
        done.set()
    join_ok(evaluator)
    assert is_grad_enabled()


@pytest.mark.parametrize("shared", [False, True], ids=["own-blocks", "one-shared-instance"])
def test_interleaved_exits_restore_each_threads_own_mode(shared):
    """A enters, B enters, A exits, B exits: afterwards grad mode is on everywhere."""
    block = no_grad()
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with (block if shared else no_grad()):
            a_in.set()
            wait(b_in)
            seen["a inside"] = is_grad_enabled()
        seen["a after"] = is_grad_enabled()
        a_out.set()

    def second():
        wait(a_in)
        with (block if shared else no_grad()):
            b_in.set()
            wait(a_out)
            seen["b inside"] = is_grad_enabled()
        seen["b after"] = is_grad_enabled()
        training_step()

    threads = [run_in_thread(first), run_in_thread(second)]
    for thread in threads:
        join_ok(thread)
    assert seen == {"a inside": False, "a after": True, "b inside": False, "b after": True}
    assert is_grad_enabled()
    training_step()


def test_a_decorated_function_in_two_threads_at_once_restores_grad_mode():
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    @no_grad()
    def evaluate(mine: threading.Event, other: threading.Event) -> bool:
        mine.set()
        wait(other)
        return is_grad_enabled()

    results = {}
    a = run_in_thread(lambda: (results.setdefault("a", evaluate(a_in, b_in)), a_out.set()))
    b = run_in_thread(lambda: (wait(a_in), results.setdefault("b", evaluate(b_in, a_out)),
                               training_step()))
    join_ok(a)
    join_ok(b)
    assert results == {"a": False, "b": False}
    assert is_grad_enabled()


def test_a_new_thread_starts_with_grad_mode_on_even_from_inside_no_grad():
    seen = []
    with no_grad():
        thread = run_in_thread(lambda: seen.append((is_grad_enabled(), training_step().sum())))
        join_ok(thread)
        assert not is_grad_enabled()
    assert seen == [(True, 24.0)]


def test_detect_anomaly_checks_only_the_thread_that_asked():
    inside, done = threading.Event(), threading.Event()

    def watched():
        with detect_anomaly():
            inside.set()
            with pytest.raises(RuntimeError, match="detect_anomaly: Log produced NaN"), \
                    np.errstate(invalid="ignore"):
                Tensor([-1.0], requires_grad=True).log()
            wait(done)

    watcher = run_in_thread(watched)
    wait(inside)
    try:
        with np.errstate(invalid="ignore"):
            out = Tensor([-1.0], requires_grad=True).log()  # not checked in this thread
        assert np.isnan(out.data).all()
    finally:
        done.set()
    join_ok(watcher)
