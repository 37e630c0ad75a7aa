"""Train a CNN on MNIST with tinygrad_conv, on the CPU.

    python examples/mnist.py                       # 2 epochs, about 99.48% test accuracy
    python examples/mnist.py --model classic       # PyTorch's example net: about 99.1%
    python examples/mnist.py --limit 5000 --epochs 1
    python examples/mnist.py --save ckpt.npz       # checkpoint at every epoch end
    python examples/mnist.py --resume ckpt.npz --save ckpt.npz --epochs 3
    python examples/mnist.py --export mnist.safetensors   # weights PyTorch loads

The default model ("bn") is five 3x3 conv + BatchNorm + ReLU layers, 16, 16, 32, 32 and 64
channels, with a 2x2 max-pool after the second and the fourth, then dropout(0.25) and
linear(64*7*7 -> 10), trained with Adam and a one-cycle schedule peaking at lr 1e-2. "classic"
is PyTorch's MNIST example net, conv(1->32, 3) ReLU conv(32->64, 3) ReLU maxpool(2) flatten
linear(9216->128) ReLU linear(128->10), trained with Adam at lr 1e-3 decaying linearly to 0.
Both use cross-entropy, batch 64, 2 epochs. The data are the four MNIST files shipped in
examples/data/mnist/ (or downloaded into --data-dir when missing). A checkpoint holds the model
(with BatchNorm's running statistics), the optimizer, the schedule, the position in the data
(epoch and batch) and the random generator's state, so a resumed run continues exactly as if it
had never stopped.

The training itself is `fit()`, the classic loop (forward, loss, backward, step) on one screen;
`ScriptRun` adds around it what the options ask for: resume, progress, checkpoints, --max-steps.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import numpy as np

try:
    import tinygrad_conv
except ImportError:  # run from a checkout that was built in place but not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import tinygrad_conv

from tinygrad_conv import Tensor, nn, rng
from tinygrad_conv import functional as F
from tinygrad_conv.data import MNIST, DataLoader
from tinygrad_conv.optim import SGD, Adam, lr_scheduler

try:
    from tqdm import tqdm
except ImportError:  # optional: a plain line every --log-interval steps instead
    tqdm = None

try:
    import safetensors.numpy as safetensors_numpy
except ImportError:  # optional: only --export needs it
    safetensors_numpy = None

DEFAULT_DATA_DIR = Path(__file__).resolve().parent / "data" / "mnist"
NORMALIZE = (0.1307, 0.3081)  # mean and std of the training pixels, as in PyTorch's example
# What a checkpoint must agree with for a resumed run to continue the same run.
RUN_OPTIONS = ("model", "batch_size", "optimizer", "lr", "momentum", "seed", "limit", "schedule")
# the learning rate and schedule each model trains with by default
RECIPES = {
    "bn": {"lr": 1e-2, "schedule": "onecycle"},
    "classic": {"lr": 1e-3, "schedule": "linear"},
    "small": {"lr": 1e-3, "schedule": "linear"},
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default after its help, unless the help already tells it or there
    is none to show (an option left out is simply not used)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    add_training_options(parser.add_argument_group("what to train, and how"))
    add_run_options(parser.add_argument_group("data, checkpoints and output"))
    return parser


def add_training_options(p) -> None:
    p.add_argument("--epochs", type=int, default=2, help="epochs to train in all")
    p.add_argument("--model", choices=("bn", "classic", "small"), default="bn",
                   help="bn: 5 conv layers with BatchNorm; classic: PyTorch's MNIST example "
                   "net; small: a fast 2-conv net")
    p.add_argument("--batch-size", type=int, default=64, help="images per optimizer step")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam",
                   help="Adam, or SGD with --momentum")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate, the peak of a one-cycle schedule (default: 1e-2 for "
                   "bn, 1e-3 for the others)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--schedule", choices=("onecycle", "linear", "constant"), default=None,
                   help="learning rate: one cycle (warm up, then anneal; the default for bn), "
                   "decay linearly to 0 over the run (the default for the others), or keep it")
    p.add_argument("--seed", type=int, default=1,
                   help="seeds the initial weights and the order of the training data")


def add_run_options(p) -> None:
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                   help="where the four MNIST files are (downloaded there when missing)")
    p.add_argument("--limit", type=int, default=None,
                   help="train on only the first N training images")
    p.add_argument("--test-limit", type=int, default=None,
                   help="evaluate on only the first N test images")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop after this many optimizer steps in all (checkpointing there)")
    p.add_argument("--save", type=Path, default=None,
                   help="checkpoint file (.npz), written atomically at each epoch end")
    p.add_argument("--save-every", type=int, default=0,
                   help="also checkpoint every N steps (0: only at epoch ends)")
    p.add_argument("--resume", type=Path, default=None, help="checkpoint to continue from")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for the kernels and numpy's BLAS (default: all cores)")
    p.add_argument("--log-interval", type=int, default=100,
                   help="steps between progress lines when tqdm is not installed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--student", type=Path, default=None,
                   help="compute conv and pool gradients with your own functions in this "
                   "folder (python -m tinygrad_conv.exercises new DIR makes it)")
    p.add_argument("--export", type=Path, default=None,
                   help="after training, write the weights to this .safetensors file, which "
                   "PyTorch loads (needs the safetensors package)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = make_parser().parse_args(argv)
    # each model's own recipe, unless the options override it
    recipe = RECIPES[args.model]
    args.lr = recipe["lr"] if args.lr is None else args.lr
    args.schedule = recipe["schedule"] if args.schedule is None else args.schedule
    check_args(args)
    return args


class UsageError(SystemExit):
    """A bad option: `main` prints the message as one line and exits with status 2, as argparse
    does for the options it checks itself (str() is the message, for callers in Python)."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def check_args(args: argparse.Namespace) -> None:
    """Refuse, before any data is read, options that would fail (or train to NaN) later."""
    if args.export is not None and safetensors_numpy is None:
        raise UsageError("--export needs the safetensors package: pip install safetensors")
    if args.student is not None and not any((args.student / f"{task}.py").is_file()
                                            for task in ("conv", "pool")):
        raise UsageError(f"--student {args.student}: no conv.py or pool.py there (python -m "
                         "tinygrad_conv.exercises new DIR makes them)")
    if args.export is not None and not args.export.parent.is_dir():
        raise UsageError(f"--export {args.export}: the directory {args.export.parent} does not "
                         "exist")
    for name in ("epochs", "batch_size", "limit", "test_limit", "max_steps", "threads",
                 "log_interval"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.threads is not None and args.threads > tinygrad_conv.max_num_threads():
        raise UsageError(f"--threads must be <= {tinygrad_conv.max_num_threads()}, the most "
                         f"this machine runs (max_num_threads()), got {args.threads}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise UsageError(f"--lr must be a finite number > 0, got {args.lr}")
    if not 0 <= args.momentum < 1:
        raise UsageError(f"--momentum must be in [0, 1), got {args.momentum}")
    if args.save_every < 0:
        raise UsageError(f"--save-every must be >= 0, got {args.save_every}")
    if args.save is not None:
        folder = args.save.parent
        if args.save.is_dir():
            raise UsageError(f"--save {args.save}: is a directory; give a file name")
        if not folder.is_dir():
            raise UsageError(f"--save {args.save}: the directory {folder} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UsageError(f"--save {args.save}: the directory {folder} is not writable")
    if args.resume is not None and not (args.resume.is_file()
                                        and os.access(args.resume, os.R_OK)):
        raise UsageError(f"--resume {args.resume}: no such readable file")


def make_model(kind: str = "bn", lib=nn) -> nn.Sequential:
    """One of the networks, (N, 1, 28, 28) -> (N, 10) scores. `lib` is the module of layers:
    our `nn`, or `torch.nn` to build the same network in PyTorch (for loading exported
    weights)."""
    if kind == "bn":
        def conv_bn_relu(c_in: int, c_out: int) -> list:
            # no conv bias: the BatchNorm right after it subtracts any constant anyway
            return [lib.Conv2d(c_in, c_out, 3, padding=1, bias=False), lib.BatchNorm2d(c_out),
                    lib.ReLU()]
        return lib.Sequential(
            *conv_bn_relu(1, 16), *conv_bn_relu(16, 16), lib.MaxPool2d(2),    # 28 -> 14
            *conv_bn_relu(16, 32), *conv_bn_relu(32, 32), lib.MaxPool2d(2),   # 14 -> 7
            *conv_bn_relu(32, 64),
            lib.Flatten(), lib.Dropout(0.25),                                 # 64 * 7 * 7
            lib.Linear(64 * 7 * 7, 10),
        )
    if kind == "small":
        return lib.Sequential(
            lib.Conv2d(1, 8, 3, padding=1), lib.ReLU(), lib.MaxPool2d(2),    # 28 -> 14
            lib.Conv2d(8, 16, 3, padding=1), lib.ReLU(), lib.MaxPool2d(2),   # 14 -> 7
            lib.Flatten(),                                                   # 16 * 7 * 7 = 784
            lib.Linear(784, 10),
        )
    return lib.Sequential(
        lib.Conv2d(1, 32, 3), lib.ReLU(),    # 28 -> 26
        lib.Conv2d(32, 64, 3), lib.ReLU(),   # 26 -> 24
        lib.MaxPool2d(2),                    # 24 -> 12
        lib.Flatten(),                       # 64 * 12 * 12 = 9216
        lib.Linear(9216, 128), lib.ReLU(),
        lib.Linear(128, 10),
    )


def make_optimizer(args: argparse.Namespace, model: nn.Module):
    if args.optimizer == "adam":
        return Adam(model.parameters(), lr=args.lr)
    return SGD(model.parameters(), lr=args.lr, momentum=args.momentum)


def make_scheduler(args: argparse.Namespace, optimizer, total_steps: int):
    """The learning-rate schedule over the whole run (None: a constant rate)."""
    if args.schedule == "onecycle":   # warm up to args.lr, then anneal (and cycle momentum)
        return lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=total_steps)
    if args.schedule == "linear":     # lr * (1 - step / total_steps)
        return lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=0.0,
                                     total_iters=total_steps)
    return None


def make_loaders(args: argparse.Namespace) -> tuple[DataLoader, DataLoader]:
    """The training batches (in an order fixed by --seed) and the test batches."""
    train_set = MNIST(args.data_dir, train=True)
    test_set = MNIST(args.data_dir, train=False)
    if args.limit is not None:
        train_set = SimpleNamespace(images=train_set.images[:args.limit],
                                    labels=train_set.labels[:args.limit])
    if args.test_limit is not None:
        test_set = SimpleNamespace(images=test_set.images[:args.test_limit],
                                   labels=test_set.labels[:args.test_limit])
    return (DataLoader(train_set, args.batch_size, shuffle=True, seed=args.seed,
                       normalize=NORMALIZE),
            DataLoader(test_set, 1000, normalize=NORMALIZE))


def evaluate(model: nn.Module, loader: DataLoader) -> tuple[float, float]:
    """(mean cross-entropy, accuracy in %) over every batch of `loader`."""
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    with tinygrad_conv.no_grad():
        for x, y in loader:
            logits = model(Tensor(x))
            loss_sum += F.cross_entropy(logits, y).item() * len(y)
            correct += int((logits.data.argmax(axis=1) == y).sum())
            seen += len(y)
    model.train()
    return loss_sum / seen, 100.0 * correct / seen


# ---- the training loop ------------------------------------------------------------------------

def fit(model: nn.Module, optimizer, scheduler, loader: DataLoader, test_loader: DataLoader,
        epochs: int, run: Run | None = None) -> Run:
    """Train: for each epoch, for each batch, forward, loss, backward and an optimizer step
    (and the schedule's); after each epoch, the test set. That is all of training; `run` keeps
    the numbers and prints them, and is where the full script adds a resumed start, progress,
    checkpoints and an early stop (ScriptRun)."""
    run = Run(epochs) if run is None else run
    for epoch in range(run.epoch, epochs):
        loader.set_epoch(epoch, start_batch=run.batch)
        run.start_epoch(epoch, len(loader))
        for x, y in loader:
            logits = model(Tensor(x))
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            run.after_step(loss.item(), logits.data, y)
            if run.stopped:
                break
        if not run.end_epoch():  # stopped in the middle of the epoch: no test
            break
        run.report(*evaluate(model, test_loader))
        if run.stopped:
            break
    return run


def no_running() -> dict:
    return {"loss_sum": 0.0, "correct": 0, "seen": 0}


def count_batch(running: dict, loss: float, logits: np.ndarray, y: np.ndarray) -> None:
    """Add one batch's mean loss, correct predictions and size into `running`."""
    running["loss_sum"] += loss * len(y)
    running["correct"] += int((logits.argmax(axis=1) == y).sum())
    running["seen"] += len(y)


class Run:
    """Where training is (epoch, batch within it, step in all) and how it goes (this epoch's
    running loss and accuracy, the time it took); prints a line per epoch and one at the end."""

    def __init__(self, epochs: int, position: dict | None = None,
                 running: dict | None = None) -> None:
        position = position or {"epoch": 0, "batch": 0, "step": 0}
        self.epochs, self.epoch = epochs, position["epoch"]
        self.batch, self.step = position["batch"], position["step"]
        self.running = running or no_running()
        self.stopped, self.n_batches = False, 0
        self.train_time, self.train_images = 0.0, 0
        self.result = {"test_accuracy": None, "steps": self.step, "images_per_s": None}
        self.run_start = time.perf_counter()

    def start_epoch(self, epoch: int, n_batches: int) -> None:
        self.epoch, self.n_batches = epoch, n_batches
        if self.batch == 0:  # not resumed inside this epoch
            self.running = no_running()
        self.epoch_start, self.epoch_images = time.perf_counter(), 0

    def after_step(self, loss: float, logits: np.ndarray, y: np.ndarray) -> None:
        self.step += 1
        self.batch += 1
        self.epoch_images += len(y)
        count_batch(self.running, loss, logits, y)

    def end_epoch(self) -> bool:
        """Whether the epoch ran to its end (only an early stop ends one sooner)."""
        self.seconds = time.perf_counter() - self.epoch_start
        self.train_time += self.seconds
        self.train_images += self.epoch_images
        finished = self.batch == self.n_batches
        if finished:
            self.batch = 0
        return finished

    def report(self, test_loss: float, test_acc: float) -> None:
        r = self.running
        print(f"epoch {self.epoch + 1}/{self.epochs}: train loss {r['loss_sum'] / r['seen']:.4f} "
              f"acc {100.0 * r['correct'] / r['seen']:.2f}% | test loss {test_loss:.4f} "
              f"acc {test_acc:.2f}% | {self.seconds:.1f} s, "
              f"{self.epoch_images / self.seconds:.0f} images/s", flush=True)
        self.result.update(test_accuracy=test_acc, test_loss=test_loss)

    def finish(self) -> dict:
        """The final numbers, also printed."""
        result, trained = self.result, self.train_time > 0
        result.update(steps=self.step, wall_s=time.perf_counter() - self.run_start,
                      images_per_s=self.train_images / self.train_time if trained else None)
        print(f"done: {self.step} steps, wall time {result['wall_s']:.1f} s"
              + (f", {result['images_per_s']:.0f} training images/s" if trained else "")
              + (f", test accuracy {result['test_accuracy']:.2f}%"
                 if result["test_accuracy"] is not None else ""))
        return result


# ---- what the full script adds: resume, progress, checkpoints, --max-steps -------------------

def save_checkpoint(path: Path, model, optimizer, scheduler, args, position: dict,
                    running: dict) -> None:
    tinygrad_conv.save({
        "model": dict(model.state_dict()),
        "optimizer": optimizer.state_dict(),
        "scheduler": {} if scheduler is None else scheduler.state_dict(),
        "run": {name: getattr(args, name) for name in RUN_OPTIONS + ("epochs",)
                if getattr(args, name) is not None},
        "position": position,   # epoch, batch (the next one within it), step (in all)
        "running": running,     # this epoch's sums so far, so its reported numbers match too
        "rng": rng.generator().bit_generator.state,
    }, path)


def load_checkpoint(path: Path, model, optimizer, scheduler, args) -> tuple[dict, dict]:
    """Restore model, optimizer, schedule and generator from `path`; return (position,
    running)."""
    try:
        state = tinygrad_conv.load(path)
        saved_run = state["run"]
        # a schedule's learning rate at a step depends on the total number of epochs
        for name in RUN_OPTIONS + (("epochs",) if args.schedule != "constant" else ()):
            if saved_run.get(name) != getattr(args, name):
                raise UsageError(
                    f"--resume {path}: the checkpoint was made with --{name.replace('_', '-')} "
                    f"{saved_run.get(name)}, this run has {getattr(args, name)}; give the same "
                    "value to continue that run")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        rng.generator().bit_generator.state = state["rng"]
        return state["position"], state["running"]
    except (ValueError, TypeError, KeyError) as e:
        raise UsageError(f"--resume {path}: not a checkpoint of this example ({e})") from None


class Progress:
    """A tqdm bar with running loss and accuracy, or a plain line every few steps."""

    def __init__(self, args, epoch: int, total: int, done: int) -> None:
        self.bar = None
        self.every = args.log_interval
        self.label = f"epoch {epoch + 1}/{args.epochs}"
        if tqdm is not None and not args.no_progress:
            self.bar = tqdm(total=total, initial=done, desc=self.label, unit="batch",
                            dynamic_ncols=True, leave=False)
        self.quiet = args.no_progress

    def update(self, batch: int, total: int, loss: float, accuracy: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{accuracy:.2f}%", refresh=False)
        elif not self.quiet and (batch % self.every == 0 or batch == total):
            print(f"{self.label}  batch {batch}/{total}  loss {loss:.4f}  acc {accuracy:.2f}%",
                  flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class ScriptRun(Run):
    """A Run with what the options ask for: a start from --resume, a progress bar, checkpoints
    to --save (every --save-every steps, at --max-steps and at each epoch's end) and the stop at
    --max-steps."""

    def __init__(self, args: argparse.Namespace, model, optimizer, scheduler) -> None:
        position = running = None
        if args.resume is not None:
            position, running = load_checkpoint(args.resume, model, optimizer, scheduler, args)
            print(f"resumed from {args.resume} at epoch {position['epoch'] + 1}, "
                  f"batch {position['batch']}, step {position['step']}")
        super().__init__(args.epochs, position, running)
        self.args, self.model, self.optimizer, self.scheduler = args, model, optimizer, scheduler

    def start_epoch(self, epoch: int, n_batches: int) -> None:
        super().start_epoch(epoch, n_batches)
        self.progress = Progress(self.args, epoch, n_batches, self.batch)

    def after_step(self, loss: float, logits: np.ndarray, y: np.ndarray) -> None:
        super().after_step(loss, logits, y)
        r, args = self.running, self.args
        self.progress.update(self.batch, self.n_batches, r["loss_sum"] / r["seen"],
                             100.0 * r["correct"] / r["seen"])
        self.stopped = args.max_steps is not None and self.step >= args.max_steps
        if args.save is not None and self.batch < self.n_batches and (
                self.stopped or (args.save_every and self.step % args.save_every == 0)):
            self.save(self.epoch, self.batch, self.running)

    def end_epoch(self) -> bool:
        self.progress.close()
        finished = super().end_epoch()
        if not finished:
            print(f"stopped at step {self.step} (--max-steps): epoch {self.epoch + 1}, "
                  f"batch {self.batch}")
        elif self.args.save is not None:
            self.save(self.epoch + 1, 0, no_running())
        return finished

    def save(self, epoch: int, batch: int, running: dict) -> None:
        save_checkpoint(self.args.save, self.model, self.optimizer, self.scheduler, self.args,
                        {"epoch": epoch, "batch": batch, "step": self.step}, running)


def train(args: argparse.Namespace) -> dict:
    """Run the training the options describe; return the final numbers."""
    if args.threads is not None:
        tinygrad_conv.set_num_threads(args.threads)  # conv, pool and Linear kernels
    loader, test_loader = make_loaders(args)
    tinygrad_conv.manual_seed(args.seed)
    model = make_model(args.model)
    optimizer = make_optimizer(args, model)
    scheduler = make_scheduler(args, optimizer, args.epochs * len(loader))
    run = ScriptRun(args, model, optimizer, scheduler)
    n_params = sum(p.data.size for p in model.parameters())
    print(f"{len(loader.labels)} training and {len(test_loader.labels)} test images, "
          f"{args.model} model with {n_params} parameters, {args.optimizer} lr {args.lr} "
          f"({args.schedule}), batch {args.batch_size}, {tinygrad_conv.get_num_threads()} threads")
    fit(model, optimizer, scheduler, loader, test_loader, args.epochs, run)
    result = run.finish()
    if args.export is not None:
        # plain numpy arrays under PyTorch's names: safetensors.torch.load_file(path) gives a
        # state dict that make_model(args.model, torch.nn).load_state_dict accepts
        safetensors_numpy.save_file(model.state_dict(), str(args.export))
        print(f"exported the weights to {args.export} (safetensors, for PyTorch too)")
    return result


def main(argv: list[str] | None = None) -> None:
    try:
        args = parse_args(argv)
        with tinygrad_conv.student_kernels(args.student) if args.student else nullcontext():
            train(args)
    except UsageError as e:
        print(f"{Path(sys.argv[0]).name}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
