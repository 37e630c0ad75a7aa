"""examples/moons.py: micrograd's demo reaches 100% on the two moons; its steps are micrograd's."""

from __future__ import annotations

import random
import re

import micrograd.engine
import micrograd.nn
import numpy as np
import pytest

from tinygrad_conv.scalar import MLP

from helpers import EXAMPLES, load_example, run_python


@pytest.fixture(scope="module")
def moons():
    return load_example("moons")


def test_the_demo_prints_every_step_and_reaches_100_percent():
    result = run_python([EXAMPLES / "moons.py"], timeout=300)
    steps = re.findall(r"^step +(\d+) +loss (\S+) +accuracy (\d+)%$", result.stdout, re.M)
    assert [int(k) for k, _, _ in steps] == list(range(100))
    losses = [float(loss) for _, loss, _ in steps]
    accuracies = [int(acc) for _, _, acc in steps]
    assert accuracies[0] < 90 and accuracies[-1] == 100 and losses[-1] < losses[0] / 10
    assert result.stdout.rstrip().endswith("final accuracy 100%")


def test_training_steps_are_micrograds(moons):
    X, y = moons.make_moons(20, seed=3)
    random.seed(5)
    ours = MLP(2, [16, 16, 1])
    random.seed(5)
    theirs = micrograd.nn.MLP(2, [16, 16, 1])
    history = moons.train(ours, X, y, steps=3, log=None)
    their_history = moons.train(theirs, X, y, steps=3, value=micrograd.engine.Value, log=None)
    # the same arithmetic; only the order in which a weight's gradient terms are added differs
    # (micrograd's follows memory addresses), so losses agree to rounding
    for (loss, accuracy), (their_loss, their_accuracy) in zip(history, their_history):
        assert loss == pytest.approx(their_loss, rel=1e-12) and accuracy == their_accuracy
    for p, q in zip(ours.parameters(), theirs.parameters()):
        assert p.data == pytest.approx(q.data, rel=1e-11, abs=1e-13)


def test_make_moons_is_two_seeded_half_circles(moons):
    X, y = moons.make_moons(101, noise=0.0, seed=0)
    assert X.shape == (101, 2) and sorted(set(y.tolist())) == [-1, 1]
    assert (y == -1).sum() == 50 and (y == 1).sum() == 51
    upper, lower = X[y == -1], X[y == 1]
    np.testing.assert_allclose(np.hypot(upper[:, 0], upper[:, 1]), 1.0)
    np.testing.assert_allclose(np.hypot(lower[:, 0] - 1, lower[:, 1] - 0.5), 1.0)
    assert (upper[:, 1] >= -1e-12).all() and (lower[:, 1] <= 0.5 + 1e-12).all()
    a, b = moons.make_moons(50, seed=4), moons.make_moons(50, seed=4)
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], moons.make_moons(50)[0])


def test_plot_draws_the_decision_boundary(moons, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "moons.png"
    moons.main(["--steps", "2", "--samples", "10", "--plot", str(path)])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"decision boundary drawn to {path}" in capsys.readouterr().out


def test_bad_arguments_are_refused(moons, capsys):
    with pytest.raises(SystemExit):
        moons.main(["--steps", "0"])
    assert "--steps must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="make_moons: n_samples must be >= 2, got 1"):
        moons.make_moons(1)
