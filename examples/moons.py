"""micrograd's demo on the scalar engine: a 2-16-16-1 MLP learns to separate two half-moons.

    python examples/moons.py                   # 100 steps, prints loss and accuracy each step
    python examples/moons.py --plot moons.png  # then draws the decision boundary (matplotlib)

The data are 100 points on two interleaved half-circles with Gaussian noise (sd 0.1), labels
-1 and +1, made with numpy from --seed. The model is `MLP(2, [16, 16, 1])` from
`tinygrad_conv.scalar`, one Value per weight, initialised from Python's `random` seeded with
--seed. The loss is micrograd's: the SVM max-margin loss mean(relu(1 - y * score)) plus
1e-4 * sum(w^2), minimised by plain gradient descent with the rate going from 1.0 down to 0.1.
Every step backpropagates through the whole graph of the 100 points, about 60,000 Values.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

try:
    import tinygrad_conv  # noqa: F401
except ImportError:  # run from a checkout that was built in place but not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tinygrad_conv.scalar import MLP, Value

ALPHA = 1e-4  # weight of the L2 penalty


def make_moons(n_samples: int = 100, noise: float = 0.1,
               seed: int = 1337) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved half-circles: X (n_samples, 2), y (n_samples,) of -1 and +1, shuffled.

    The upper half of the unit circle is class -1; the lower half of a unit circle centred at
    (1, 0.5) is class +1; then Gaussian noise of sd `noise` on both coordinates.
    """
    if n_samples < 2:
        raise ValueError(f"make_moons: n_samples must be >= 2, got {n_samples}")
    rng = np.random.default_rng(seed)
    n_upper = n_samples // 2
    n_lower = n_samples - n_upper
    t_upper = np.linspace(0, np.pi, n_upper)
    t_lower = np.linspace(0, np.pi, n_lower)
    upper = np.stack([np.cos(t_upper), np.sin(t_upper)], axis=1)
    lower = np.stack([1 - np.cos(t_lower), 0.5 - np.sin(t_lower)], axis=1)
    X = np.concatenate([upper, lower]) + rng.normal(scale=noise, size=(n_samples, 2))
    y = np.concatenate([-np.ones(n_upper, dtype=np.int64), np.ones(n_lower, dtype=np.int64)])
    order = rng.permutation(n_samples)
    return X[order], y[order]


def loss_and_accuracy(model, X: np.ndarray, y: np.ndarray, value=Value):
    """micrograd's loss: mean(relu(1 - y_i * score_i)) + ALPHA * sum(p^2), and the fraction of
    points on the right side. `value` is the Value class of the engine the model is made of."""
    inputs = [[value(float(a)), value(float(b))] for a, b in X]
    scores = [model(x) for x in inputs]
    labels = [int(v) for v in y]
    losses = [(1 + -yi * score).relu() for yi, score in zip(labels, scores)]
    data_loss = sum(losses) * (1.0 / len(losses))
    reg_loss = ALPHA * sum(p * p for p in model.parameters())
    accuracy = sum((yi > 0) == (score.data > 0) for yi, score in zip(labels, scores)) / len(y)
    return data_loss + reg_loss, accuracy


def train_step(model, X: np.ndarray, y: np.ndarray, k: int, steps: int,
               value=Value) -> tuple[float, float]:
    """Step k of `steps` of gradient descent on the whole data, at the rate 1.0 - 0.9 * k / steps.
    Returns the loss and the accuracy before the update."""
    loss, accuracy = loss_and_accuracy(model, X, y, value)
    model.zero_grad()
    loss.backward()
    rate = 1.0 - 0.9 * k / steps
    for p in model.parameters():
        p.data -= rate * p.grad
    return loss.data, accuracy


def train(model, X: np.ndarray, y: np.ndarray, steps: int = 100, value=Value,
          log: Callable[[str], None] | None = print) -> list[tuple[float, float]]:
    """`steps` steps of train_step; (loss, accuracy) of each."""
    history = []
    for k in range(steps):
        loss, accuracy = train_step(model, X, y, k, steps, value)
        history.append((loss, accuracy))
        if log is not None:
            log(f"step {k:3d}  loss {loss:.6f}  accuracy {accuracy:.0%}")
    return history


def plot_decision_boundary(model, X: np.ndarray, y: np.ndarray, path: Path) -> None:
    """The model's sign over a grid (step 0.25, as micrograd's demo) and the points."""
    plt = _pyplot()
    xs = np.arange(X[:, 0].min() - 1, X[:, 0].max() + 1, 0.25)
    ys = np.arange(X[:, 1].min() - 1, X[:, 1].max() + 1, 0.25)
    xx, yy = np.meshgrid(xs, ys)
    grid = np.stack([xx.ravel(), yy.ravel()], axis=1)
    positive = np.array([model([float(a), float(b)]).data > 0 for a, b in grid])
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.contourf(xx, yy, positive.reshape(xx.shape), cmap=plt.cm.Spectral, alpha=0.8)
    ax.scatter(X[:, 0], X[:, 1], c=y, s=40, cmap=plt.cm.jet, edgecolors="k")
    ax.set(xlim=(xx.min(), xx.max()), ylim=(yy.min(), yy.max()),
           title="MLP(2, [16, 16, 1]) on two moons: decision boundary")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("moons.py: --plot needs matplotlib; pip install matplotlib") from None
    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt
    return plt


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=100, help="gradient descent steps")
    p.add_argument("--samples", type=int, default=100, help="points in the data set")
    p.add_argument("--seed", type=int, default=1337, help="seed of the data and the weights")
    p.add_argument("--plot", type=Path, metavar="PATH",
                   help="draw the decision boundary to this image (.png, .svg, .pdf)")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error(f"--steps must be >= 1, got {args.steps}")
    if args.samples < 2:
        p.error(f"--samples must be >= 2, got {args.samples}")
    return args


def main(argv: list[str] | None = None) -> list[tuple[float, float]]:
    args = parse_args(argv)
    if args.plot is not None:
        _pyplot()  # fail before training when matplotlib is missing
    X, y = make_moons(args.samples, seed=args.seed)
    random.seed(args.seed)
    model = MLP(2, [16, 16, 1])
    print(f"{model}\n{len(model.parameters())} parameters, {len(X)} points")
    start = time.perf_counter()
    history = train(model, X, y, args.steps)
    print(f"{args.steps} steps in {time.perf_counter() - start:.1f} s, "
          f"final accuracy {history[-1][1]:.0%}")
    if args.plot is not None:
        plot_decision_boundary(model, X, y, args.plot)
        print(f"decision boundary drawn to {args.plot}")
    return history


if __name__ == "__main__":
    main()
