"""Training on real MNIST: a short run must learn, a resumed run must equal an uninterrupted one
bit for bit, bad checkpoints must be refused without harm, and examples/mnist.py must run."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import tinygrad_conv
from tinygrad_conv import Tensor, nn
from tinygrad_conv import functional as F
from tinygrad_conv.data import MNIST, DataLoader
from tinygrad_conv.optim import Adam

from helpers import ROOT, assert_same_checkpoint, load_example, run_python

EXAMPLE = ROOT / "examples" / "mnist.py"
DATA = ROOT / "examples" / "data" / "mnist"
NORMALIZE = (0.1307, 0.3081)


@pytest.fixture(scope="module")
def example():
    return load_example("mnist")


@pytest.fixture(scope="module")
def mnist():
    return MNIST(DATA, train=True, download=False), MNIST(DATA, train=False, download=False)


def accuracy(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = seen = 0
    with tinygrad_conv.no_grad():
        for x, y in loader:
            correct += int((model(Tensor(x)).data.argmax(axis=1) == y).sum())
            seen += len(y)
    return correct / seen


def test_small_cnn_learns_real_mnist_in_one_epoch_of_4000_images(mnist):
    train, test = mnist
    subset = SimpleNamespace(images=train.images[:4000], labels=train.labels[:4000])
    held_out = SimpleNamespace(images=test.images[:1000], labels=test.labels[:1000])
    tinygrad_conv.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(784, 10))
    optimizer = Adam(model.parameters(), lr=3e-3)
    before = accuracy(model, DataLoader(held_out, 500, normalize=NORMALIZE))
    model.train()
    for x, y in DataLoader(subset, 32, shuffle=True, seed=0, normalize=NORMALIZE):
        loss = F.cross_entropy(model(Tensor(x)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = accuracy(model, DataLoader(held_out, 500, normalize=NORMALIZE))
    # measured: 93.7% with these seeds, 88-94% over seeds 0-3; the untrained net ~10%
    assert before < 0.3
    assert after > 0.85, f"test accuracy {after:.3f} after one epoch of 4000 images"


def run_example(example, tmp_path: Path, *options: str) -> dict:
    args = example.parse_args([
        "--model", "small", "--limit", "256", "--test-limit", "100", "--batch-size", "32",
        "--epochs", "2", "--threads", "2", "--no-progress", "--data-dir", str(DATA), *options])
    return example.train(args)


@pytest.mark.parametrize("stop_at", [11, 8], ids=["mid-epoch", "epoch-end"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_resumed_run_equals_uninterrupted_run_bitwise(example, tmp_path, stop_at, optimizer):
    # 256 images in batches of 32: 8 steps per epoch, 16 in all; stop after step `stop_at`
    straight, resumed = tmp_path / "straight.npz", tmp_path / "resumed.npz"
    run_example(example, tmp_path, "--optimizer", optimizer, "--save", str(straight))
    run_example(example, tmp_path, "--optimizer", optimizer, "--save", str(resumed),
                "--max-steps", str(stop_at))
    stopped = tinygrad_conv.load(resumed)
    assert stopped["position"] == {"epoch": stop_at // 8, "batch": stop_at % 8, "step": stop_at}
    run_example(example, tmp_path, "--optimizer", optimizer, "--resume", str(resumed),
                "--save", str(resumed))
    a, b = tinygrad_conv.load(straight), tinygrad_conv.load(resumed)
    assert a["position"] == {"epoch": 2, "batch": 0, "step": 16}
    assert_same_checkpoint(a, b)
    # and the run really trained: the weights moved away from their seeded start
    tinygrad_conv.manual_seed(1)
    start = example.make_model("small").state_dict()
    assert not np.array_equal(start["0.weight"], a["model"]["0.weight"])


def test_resume_refuses_a_checkpoint_of_a_different_run(example, tmp_path):
    path = tmp_path / "c.npz"
    run_example(example, tmp_path, "--save", str(path), "--max-steps", "3")
    with pytest.raises(SystemExit, match="made with --batch-size 32, this run has 16"):
        run_example(example, tmp_path, "--resume", str(path), "--batch-size", "16")


@pytest.mark.parametrize("spoil", ["truncated", "foreign npz", "text"])
def test_bad_checkpoint_is_a_clear_error_and_keeps_the_last_good_one(example, tmp_path, spoil):
    good, bad = tmp_path / "good.npz", tmp_path / "bad.npz"
    run_example(example, tmp_path, "--save", str(good), "--max-steps", "3")
    content = good.read_bytes()
    if spoil == "truncated":
        bad.write_bytes(content[:len(content) // 2])
    elif spoil == "foreign npz":
        np.savez(bad, weight=np.ones(3))
    else:
        bad.write_text("not a checkpoint")
    with pytest.raises(SystemExit, match=f"--resume {bad}: not a checkpoint of this example"):
        run_example(example, tmp_path, "--resume", str(bad), "--save", str(good))
    assert good.read_bytes() == content


def test_example_script_runs_end_to_end_from_another_directory(tmp_path):
    # the default (BatchNorm) model and data directory, a few batches, as a user would run it
    checkpoint = tmp_path / "ckpt.npz"
    done = run_python([EXAMPLE, "--limit", "128", "--test-limit", "200", "--epochs", "1",
                       "--threads", "2", "--save", checkpoint], cwd=tmp_path)
    assert "epoch 1/1: train loss" in done.stdout and "images/s" in done.stdout
    assert "test accuracy" in done.stdout
    state = tinygrad_conv.load(checkpoint)
    assert state["position"] == {"epoch": 1, "batch": 0, "step": 2}
    assert state["model"]["19.weight"].shape == (10, 64 * 7 * 7)
    assert state["model"]["1.num_batches_tracked"] == 2             # buffers are saved too
    assert state["scheduler"]["type"] == "OneCycleLR"
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # atomic: no leftovers


@pytest.mark.slow
def test_default_example_reaches_99_3_percent_in_two_epochs(example, tmp_path):
    result = example.train(example.parse_args(["--no-progress", "--threads", "2"]))
    assert result["test_accuracy"] >= 99.3


def test_each_model_has_its_recipe_and_options_override_it(example):
    default = example.parse_args([])
    assert (default.model, default.lr, default.schedule) == ("bn", 1e-2, "onecycle")
    classic = example.parse_args(["--model", "classic"])       # today's recipe, unchanged
    assert (classic.lr, classic.schedule, classic.optimizer) == (1e-3, "linear", "adam")
    chosen = example.parse_args(["--model", "classic", "--lr", "0.01", "--schedule", "onecycle"])
    assert (chosen.lr, chosen.schedule) == (0.01, "onecycle")


def test_linear_schedule_gives_the_learning_rates_of_the_classic_recipe(example):
    # lr * (1 - step / total_steps), bit for bit, as the example computed it before schedulers
    args = example.parse_args(["--model", "classic"])
    total = 1876
    optimizer = example.make_optimizer(args, example.make_model("small"))
    scheduler = example.make_scheduler(args, optimizer, total)
    for step in range(total):
        assert optimizer.lr == args.lr * (1 - step / total)
        scheduler.step()


def test_resumed_batchnorm_onecycle_run_equals_uninterrupted_run_bitwise(example, tmp_path):
    # the default recipe: BatchNorm's running statistics, dropout's generator, the schedule;
    # 128 images in batches of 32, stopped in the middle of the first epoch
    options = ["--model", "bn", "--schedule", "onecycle", "--limit", "128"]
    straight, resumed = tmp_path / "straight.npz", tmp_path / "resumed.npz"
    run_example(example, tmp_path, *options, "--save", str(straight))
    run_example(example, tmp_path, *options, "--save", str(resumed), "--max-steps", "3")
    run_example(example, tmp_path, *options, "--resume", str(resumed), "--save", str(resumed))
    a, b = tinygrad_conv.load(straight), tinygrad_conv.load(resumed)
    assert a["scheduler"]["last_epoch"] == 8 and a["model"]["1.num_batches_tracked"] == 8
    assert_same_checkpoint(a, b)


def test_example_without_tqdm_prints_plain_progress_lines(tmp_path):
    shutil.copy(EXAMPLE, tmp_path / "mnist.py")
    (tmp_path / "tqdm.py").write_text("raise ImportError('no tqdm here')\n")
    done = run_python([tmp_path / "mnist.py", "--model", "small", "--limit", "192",
                       "--test-limit", "100", "--epochs", "1", "--log-interval", "1",
                       "--data-dir", DATA], cwd=tmp_path, path=(tmp_path,))
    assert "epoch 1/1  batch 3/3  loss" in done.stdout


def test_the_script_trains_with_the_minimal_loop_and_gets_its_numbers(example, tmp_path):
    # fit() with no extras (a plain Run) on the same options: the same weights bit for bit and
    # the same test accuracy as the full script, which adds checkpoints and progress around it
    options = ["--model", "bn", "--schedule", "onecycle", "--limit", "96", "--batch-size", "32"]
    args = example.parse_args([*options, "--test-limit", "100", "--epochs", "2",
                               "--no-progress", "--data-dir", str(DATA),
                               "--save", str(tmp_path / "script.npz")])
    result = example.train(args)
    loader, test_loader = example.make_loaders(args)
    tinygrad_conv.manual_seed(args.seed)
    model = example.make_model(args.model)
    optimizer = example.make_optimizer(args, model)
    scheduler = example.make_scheduler(args, optimizer, args.epochs * len(loader))
    run = example.fit(model, optimizer, scheduler, loader, test_loader, args.epochs)
    assert run.step == result["steps"] == 6
    assert run.result["test_accuracy"] == result["test_accuracy"]
    script = tinygrad_conv.load(tmp_path / "script.npz")["model"]
    assert_same_checkpoint(dict(model.state_dict()), script, "model")


def test_the_minimal_training_loop_stays_short(example):
    import inspect

    lines = [line for line in inspect.getsource(example.fit).splitlines() if line.strip()]
    assert len(lines) <= 30, f"fit() has grown to {len(lines)} lines"
