"""The scalar engine against micrograd (pure Python, the reference), the same work in the same run.

    python benchmarks/bench_scalar.py [--repeats 7] [--moons-steps 100]

Prints a table of median wall times and the speed-up (micrograd's time / ours):
- MLP: micrograd's demo loss (SVM max-margin + L2) of MLP(2, [16, 16, 1]) over 20 points,
  forward, zero_grad and backward (about 13,000 Values); both models start from the same
  weights (random.seed), so they do exactly the same arithmetic;
- chain: y = (y * a + b).relu() repeated (1,002 and 10,002 ops), then backward, per op
  (micrograd's recursive topological sort costs more per op the deeper the graph);
- moons: examples/moons.py's whole training (100 points, --moons-steps steps), the two
  engines' steps alternating, each step timed.
Measurements alternate between the two engines, so load from other processes hits both.
micrograd's backward recurses once per node, so the recursion limit is raised for it.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import micrograd.engine
import micrograd.nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
try:
    import tinygrad_conv  # noqa: F401
except ImportError:  # run from a checkout that was built in place but not installed
    sys.path.insert(0, str(ROOT))

import moons  # noqa: E402

from tinygrad_conv import scalar  # noqa: E402

CHAINS = (334, 3334)  # (y * a + b).relu() is 3 ops: 1,002 and 10,002 in all
MLP_POINTS = 20
ENGINES = {"ours": (scalar.Value, scalar.MLP),
           "micrograd": (micrograd.engine.Value, micrograd.nn.MLP)}


def mlp_step(engine: str, X, y) -> Callable[[], None]:
    value, mlp = ENGINES[engine]
    random.seed(1337)
    model = mlp(2, [16, 16, 1])

    def step() -> None:
        loss, _ = moons.loss_and_accuracy(model, X, y, value)
        model.zero_grad()
        loss.backward()
    return step


def chain(engine: str, length: int) -> Callable[[], None]:
    value, _ = ENGINES[engine]

    def run() -> None:
        a, b = value(0.9), value(0.5)
        y = value(1.0)
        for _ in range(length):
            y = (y * a + b).relu()
        y.backward()
    return run


def median_times(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each fn, samples alternating between them; a sample is as
    many calls as take about 50 ms, so that a fast fn is not timed by a single short call.

    micrograd's graphs are reference cycles (each node's _backward closure refers to the node),
    freed only by the cycle collector; each sample starts after a gc.collect(), so that one
    engine does not pay for collecting the other's garbage."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    calls = {}
    for name, fn in fns.items():
        gc.collect()
        start = time.perf_counter()
        fn()  # warm up, and size the samples
        calls[name] = max(1, round(0.05 / (time.perf_counter() - start)))
    for _ in range(repeats):
        for name, fn in fns.items():
            gc.collect()
            start = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            times[name].append((time.perf_counter() - start) / calls[name])
    return {name: statistics.median(t) for name, t in times.items()}


def moons_training(steps: int, X, y) -> dict[str, tuple[float, float]]:
    """{engine: (seconds, final accuracy)} of examples/moons.py's training, the two engines'
    steps alternating (a gc.collect() before each, untimed, as in median_times)."""
    models = {}
    for engine, (_, mlp) in ENGINES.items():
        random.seed(1337)
        models[engine] = mlp(2, [16, 16, 1])
    seconds = dict.fromkeys(ENGINES, 0.0)
    accuracy = dict.fromkeys(ENGINES, 0.0)
    for k in range(steps):
        for engine, (value, _) in ENGINES.items():
            gc.collect()
            start = time.perf_counter()
            _, accuracy[engine] = moons.train_step(models[engine], X, y, k, steps, value)
            seconds[engine] += time.perf_counter() - start
    return {engine: (seconds[engine], accuracy[engine]) for engine in ENGINES}


def row(name: str, ours: float, theirs: float, unit: str, scale: float) -> str:
    return (f"| {name} | {_number(ours * scale)} {unit} | {_number(theirs * scale)} {unit} | "
            f"{theirs / ours:.1f}x |")


def _number(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--moons-steps", type=int, default=100,
                   help="training steps of the moons demo (0 skips it)")
    args = p.parse_args(argv)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 100_000))  # micrograd's backward

    X, y = moons.make_moons(100)
    rows = ["| measurement | ours | micrograd | speed-up |", "| --- | ---: | ---: | ---: |"]

    t = median_times({e: mlp_step(e, X[:MLP_POINTS], y[:MLP_POINTS]) for e in ENGINES},
                     args.repeats)
    n_values = _count_values(X[:MLP_POINTS], y[:MLP_POINTS])
    rows.append(row(f"MLP 2-16-16-1 loss, {MLP_POINTS} points, fwd+bwd", t["ours"],
                    t["micrograd"], "ms", 1e3))
    rows.append(row(f"the same, per Value ({n_values:,} Values)", t["ours"] / n_values,
                    t["micrograd"] / n_values, "us", 1e6))

    for length in CHAINS:
        t = median_times({e: chain(e, length) for e in ENGINES}, args.repeats)
        n_ops = 3 * length
        rows.append(row(f"chain of {n_ops:,} ops, fwd+bwd, per op", t["ours"] / n_ops,
                        t["micrograd"] / n_ops, "us", 1e6))

    if args.moons_steps > 0:
        t = moons_training(args.moons_steps, X, y)
        (ours, ours_acc), (theirs, their_acc) = t["ours"], t["micrograd"]
        rows.append(row(f"moons demo, {args.moons_steps} steps (final accuracy {ours_acc:.0%} "
                        f"/ {their_acc:.0%})", ours, theirs, "s", 1))
    print("\n".join(rows))


def _count_values(X, y) -> int:
    random.seed(1337)
    model = scalar.MLP(2, [16, 16, 1])
    loss, _ = moons.loss_and_accuracy(model, X, y)
    return len(scalar.topological_order(loss))


if __name__ == "__main__":
    main()
