"""Peak extra memory of one training step: tinygrad_conv against PyTorch, same model, same run.

    python benchmarks/bench_memory.py                 # the default (classic) MNIST model
    python benchmarks/bench_memory.py --model small --batch-size 32

Each framework is measured in a fresh subprocess, so neither sees the other's allocations:
1. build the model (the same weights: ours are copied into PyTorch's), an Adam optimizer and one
   batch of random images;
2. run WARMUP training steps, so gradients, optimizer state and allocator pools exist, as in
   any step of a real run;
3. drop the last loss, reset the kernel's peak-RSS counter (`echo 5 > /proc/self/clear_refs`),
   read the resident memory (VmRSS), run STEPS more steps written as an ordinary training loop
   (`loss = step()`, so one step's loss is still bound while the next runs) and read the peak
   (VmHWM). Peak extra memory = VmHWM - VmRSS before: what training needs on top of a process
   that holds the model, its gradients and the optimizer state.

Measured as resident memory, so both frameworks' allocators are counted the same way. glibc's
malloc keeps freed blocks below a dynamic mmap threshold, which would hide the step's real
peak behind memory retained from the warm-up; both subprocesses therefore run with
MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ fixed at 128 KiB, so large buffers come from
and go back to the kernel. Reports the median over REPEATS subprocesses per framework and the
ratio (target: ours <= 1.5x PyTorch's).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def measure(framework: str, loop: str, model_kind: str, batch_size: int, warmup: int,
            steps: int, threads: int) -> dict:
    """Run in the child: the peak extra resident memory of `steps` training steps, in MiB."""
    import numpy as np

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "examples"))
    import mnist

    import tinygrad_conv
    tinygrad_conv.set_num_threads(threads)
    tinygrad_conv.manual_seed(0)
    ours = mnist.make_model(model_kind)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch_size, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, size=batch_size)

    if framework == "torch":
        import torch
        torch.set_num_threads(threads)
        model = _torch_model(torch, model_kind)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
        del ours
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)

        def step():
            logits = model(xt)
            loss = torch.nn.functional.cross_entropy(logits, yt)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss
    else:
        from tinygrad_conv import Tensor
        from tinygrad_conv import functional as F
        from tinygrad_conv.optim import Adam
        model = ours
        opt = Adam(model.parameters(), lr=1e-3)

        def step():
            logits = model(Tensor(x))
            loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss

    for _ in range(warmup):
        loss = step()
    del loss  # the baseline: model, gradients and optimizer state, no step in flight
    _reset_peak()
    before = _status_kib("VmRSS")
    # "held": a loop as people write it, each step's loss still bound while the next one runs;
    # "dropped": the loop deletes the loss at the end of each step
    for _ in range(steps):
        loss = step()
        if loop == "dropped":
            del loss
            loss = None
    peak = _status_kib("VmHWM")
    del loss
    return {"framework": framework, "rss_before_mib": before / 1024,
            "peak_extra_mib": (peak - before) / 1024}


def _torch_model(torch, kind: str):
    """The same architecture as examples/mnist.py's make_model, in PyTorch."""
    nn = torch.nn
    if kind == "small":
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(784, 10))
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(9216, 128), nn.ReLU(), nn.Linear(128, 10))


def run_child(framework: str, loop: str, args: argparse.Namespace) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072",
               OMP_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, __file__, "--child", framework, "--loop", loop, "--model", args.model,
           "--batch-size", str(args.batch_size), "--warmup", str(args.warmup),
           "--steps", str(args.steps), "--threads", str(args.threads)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=("classic", "small"), default="classic")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--loop", choices=("held", "dropped"), default=None,
                   help="measure only this kind of loop (default: both)")
    p.add_argument("--child", choices=("ours", "torch"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.loop, args.model, args.batch_size,
                                 args.warmup, args.steps, args.threads)))
        return
    print(f"{args.model} MNIST model, batch {args.batch_size}, Adam, {args.threads} threads; "
          f"peak extra resident memory over {args.steps} steps after {args.warmup} warm-up "
          f"steps (median of {args.repeats} fresh processes each)")
    for loop in ([args.loop] if args.loop else ["held", "dropped"]):
        report(loop, args)


def report(loop: str, args: argparse.Namespace) -> None:

    results: dict[str, list[dict]] = {"ours": [], "torch": []}
    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        for framework in results:
            results[framework].append(run_child(framework, loop, args))
    print(f" loop with the previous loss {loop}:")
    medians = {}
    for framework, runs in results.items():
        medians[framework] = statistics.median(r["peak_extra_mib"] for r in runs)
        before = statistics.median(r["rss_before_mib"] for r in runs)
        print(f"  {framework:>7}: {medians[framework]:7.1f} MiB peak extra "
              f"(resident before the steps: {before:.0f} MiB; runs: "
              + ", ".join(f"{r['peak_extra_mib']:.1f}" for r in runs) + ")")
    ratio = medians["ours"] / medians["torch"]
    print(f"    ratio ours / PyTorch: {ratio:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
