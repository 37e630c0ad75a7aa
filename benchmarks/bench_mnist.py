"""MNIST training speed: tinygrad_conv against PyTorch, same models, same batches, same run.

    python benchmarks/bench_mnist.py [--threads 2] [--repeats 7] [--steps 5] [--per-op-only]

Prints a table of median times and ratios (ours / PyTorch):
- one SGD step (forward, cross-entropy, backward, update) at batch 64 for the classic MNIST net,
  for examples/mnist.py's default net with BatchNorm (4 conv+BatchNorm+ReLU layers, 2 max-pools,
  dropout, linear) and for a small one (conv(1->8,3,p1) ReLU maxpool2 conv(8->16,3,p1) ReLU
  maxpool2 flatten linear(784->10));
- the per-op overhead: a chain of 1,002 ops ((y * a + b).relu() repeated 334 times) on
  16-element tensors, then backward, divided by the number of ops;
- an estimate of one full MNIST epoch (938 steps plus evaluating the 10,000 test images).
Measurements alternate between the two frameworks, so load from other processes hits both.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import torch

try:
    import tinygrad_conv
except ImportError:  # run from a checkout that was built in place but not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import tinygrad_conv

from tinygrad_conv import Tensor, nn
from tinygrad_conv import functional as F
from tinygrad_conv.optim import SGD

BATCH = 64
CHAIN = 334  # (y * a + b).relu() is 3 ops: 1,002 in all


def classic(lib):
    return lib.Sequential(
        lib.Conv2d(1, 32, 3), lib.ReLU(), lib.Conv2d(32, 64, 3), lib.ReLU(), lib.MaxPool2d(2),
        lib.Flatten(), lib.Linear(9216, 128), lib.ReLU(), lib.Linear(128, 10))


def small(lib):
    return lib.Sequential(
        lib.Conv2d(1, 8, 3, padding=1), lib.ReLU(), lib.MaxPool2d(2),
        lib.Conv2d(8, 16, 3, padding=1), lib.ReLU(), lib.MaxPool2d(2),
        lib.Flatten(), lib.Linear(784, 10))


def with_batchnorm(lib):
    """examples/mnist.py's default network, built by the example itself."""
    spec = importlib.util.spec_from_file_location(
        "mnist_example", Path(__file__).resolve().parent.parent / "examples" / "mnist.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example.make_model("bn", lib)


def set_threads(n: int) -> None:
    torch.set_num_threads(n)
    tinygrad_conv.set_num_threads(n)  # conv, pool and Linear all run on these threads


class Steps:
    """SGD steps on one model in both frameworks, on the same random batches."""

    def __init__(self, make, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.theirs = make(torch.nn)
        self.ours = make(nn)
        self.ours.load_state_dict(self.theirs.state_dict())
        self.t_opt = torch.optim.SGD(self.theirs.parameters(), lr=0.01, momentum=0.9)
        self.opt = SGD(self.ours.parameters(), lr=0.01, momentum=0.9)
        rng = np.random.default_rng(seed)
        self.x = rng.random((BATCH, 1, 28, 28), dtype=np.float32)
        self.y = rng.integers(0, 10, size=BATCH)
        self.tx, self.ty = torch.from_numpy(self.x), torch.from_numpy(self.y)

    def ours_step(self) -> None:
        loss = F.cross_entropy(self.ours(Tensor(self.x)), self.y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    def torch_step(self) -> None:
        loss = torch.nn.functional.cross_entropy(self.theirs(self.tx), self.ty)
        self.t_opt.zero_grad()
        loss.backward()
        self.t_opt.step()


def ours_chain() -> None:
    a = Tensor(np.full(16, 0.5, dtype=np.float32), requires_grad=True)
    b = Tensor(np.full(16, 0.1, dtype=np.float32), requires_grad=True)
    y = Tensor(np.linspace(-1, 1, 16, dtype=np.float32), requires_grad=True)
    for _ in range(CHAIN):
        y = (y * a + b).relu()
    y.sum().backward()


def torch_chain() -> None:
    a = torch.full((16,), 0.5, requires_grad=True)
    b = torch.full((16,), 0.1, requires_grad=True)
    y = torch.linspace(-1, 1, 16, requires_grad=True)
    for _ in range(CHAIN):
        y = (y * a + b).relu()
    y.sum().backward()


def timed(fn, n: int) -> float:
    """Seconds per call of fn, over n calls."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def compare(ours, theirs, repeats: int, n: int) -> tuple[float, float]:
    """Median seconds per call of each, measured in alternating blocks of n calls."""
    ours(), theirs()  # warm up: workspaces, caches, lazy imports
    a, b = [], []
    for _ in range(repeats):
        a.append(timed(ours, n))
        b.append(timed(theirs, n))
    return float(np.median(a)), float(np.median(b))


def eval_time(model, lib_is_torch: bool) -> float:
    """Seconds to score 1,000 images (one evaluation batch) without recording a graph."""
    x = np.random.default_rng(1).random((1000, 1, 28, 28), dtype=np.float32)
    if lib_is_torch:
        with torch.no_grad():
            return timed(lambda: model(torch.from_numpy(x)), 1)
    with tinygrad_conv.no_grad():
        return timed(lambda: model(Tensor(x)), 1)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7, help="timed blocks per measurement")
    p.add_argument("--steps", type=int, default=5, help="steps per timed block")
    p.add_argument("--per-op-only", action="store_true", help="only the per-op overhead row")
    args = p.parse_args(argv)
    set_threads(args.threads)
    print(f"tinygrad_conv {tinygrad_conv.__version__} (kernels: "
          f"{tinygrad_conv.get_num_threads()} threads), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), batch {BATCH}, SGD momentum 0.9")

    rows, epoch = [], None
    nets = (("classic MNIST net, one step", classic, 0.85),
            ("BatchNorm net (mnist.py's default), one step", with_batchnorm, 1.0),
            ("small net, one step", small, 0.8))
    for name, make, target in () if args.per_op_only else nets:
        steps = Steps(make)
        ours, theirs = compare(steps.ours_step, steps.torch_step, args.repeats, args.steps)
        rows.append((name, ours * 1e3, theirs * 1e3, "ms", target))
        if make is classic:
            epoch_steps = -(-60000 // BATCH)
            eval_ours = 10 * float(np.median([eval_time(steps.ours, False) for _ in range(3)]))
            eval_theirs = 10 * float(np.median([eval_time(steps.theirs, True)
                                                for _ in range(3)]))
            epoch = (epoch_steps * ours + eval_ours, epoch_steps * theirs + eval_theirs)
    ours, theirs = compare(ours_chain, torch_chain, args.repeats, 3)
    rows.append(("per-op overhead (16-elem chain, fwd+bwd)", ours / (3 * CHAIN) * 1e6,
                 theirs / (3 * CHAIN) * 1e6, "us", 0.8))

    print()
    print("| measurement | ours | PyTorch | ratio | target |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, ours, theirs, unit, target in rows:
        print(f"| {name} | {ours:.2f} {unit} | {theirs:.2f} {unit} | {ours / theirs:.2f}x | "
              f"<= {target:g}x |")
    if epoch is None:
        return
    print()
    print(f"full MNIST epoch estimate ({epoch_steps} steps + 10,000 test images): ours "
          f"{epoch[0]:.0f} s, PyTorch {epoch[1]:.0f} s")


if __name__ == "__main__":
    main()
