"""Look inside a trained MNIST CNN: its first layer's filters, feature maps, and learning curves.

    python examples/plots.py --out plots                     # train a small net briefly, plot
    python examples/plots.py --checkpoint ckpt.npz --out plots  # a net from mnist.py --save

Writes filters.png (the first conv layer's kernels), feature_maps.png (a few test digits and
what each conv / ReLU / pool layer makes of them) and, when there is a training history,
curves.png (loss and accuracy over training). A checkpoint from `examples/mnist.py --save` holds
no history, so curves.png is drawn only for a net this script trains itself (`--limit` images,
`--epochs` epochs). matplotlib is needed only to draw: `pip install matplotlib`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

# examples/mnist.py has the models, the data and the normalisation; importing it first also
# puts the checkout on sys.path when tinygrad_conv is built in place but not installed
sys.path.insert(0, str(Path(__file__).resolve().parent))
import mnist  # noqa: E402

import tinygrad_conv  # noqa: E402
from tinygrad_conv import Tensor, nn  # noqa: E402
from tinygrad_conv.data import MNIST  # noqa: E402
from tinygrad_conv.optim import Adam  # noqa: E402

# ---- what to draw (numpy only, no matplotlib) -----------------------------------------------


def first_layer_filters(model: nn.Module) -> np.ndarray:
    """The first Conv2d's kernels for input channel 0: (F, KH, KW)."""
    for _, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return module.weight.data[:, 0].copy()
    raise ValueError(f"first_layer_filters: {type(model).__name__} has no Conv2d layer")


def feature_maps(model: nn.Sequential, images: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Run images (N, 1, H, W) through the model's layers up to the first Flatten; return
    (layer name, output (N, C, H', W')) for each layer on the way."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"feature_maps: needs an nn.Sequential, got {type(model).__name__}")
    if images.ndim != 4:
        raise ValueError(f"feature_maps: images must be (N, C, H, W), got {images.shape}")
    maps = []
    x = Tensor(images)
    with tinygrad_conv.no_grad():
        for name, layer in model.named_children():
            if isinstance(layer, nn.Flatten):
                break
            x = layer(x)
            maps.append((f"{name}: {type(layer).__name__}", x.numpy()))
    return maps


def normalized(images: np.ndarray) -> np.ndarray:
    """uint8 MNIST images (N, 28, 28) as the network sees them: (N, 1, 28, 28) float32."""
    mean, std = mnist.NORMALIZE
    return ((images.astype(np.float32) / 255 - mean) / std)[:, None]


class HistoryRun(mnist.Run):
    """mnist.fit's record of a run, which also keeps, every `eval_every` steps, the mean training
    loss and accuracy since the last record and the test loss and accuracy."""

    def __init__(self, epochs: int, model: nn.Module, test_loader, eval_every: int) -> None:
        super().__init__(epochs)
        self.model, self.test_loader, self.eval_every = model, test_loader, eval_every
        self.history = {name: [] for name in
                        ("step", "train_loss", "train_accuracy", "test_loss", "test_accuracy")}
        self.since = mnist.no_running()  # loss sum, correct, seen since the last record

    def after_step(self, loss: float, logits: np.ndarray, y: np.ndarray) -> None:
        super().after_step(loss, logits, y)
        mnist.count_batch(self.since, loss, logits, y)
        if self.step % self.eval_every == 0:
            test_loss, test_acc = mnist.evaluate(self.model, self.test_loader)
            since = self.since
            for name, value in zip(self.history, (
                    self.step, since["loss_sum"] / since["seen"],
                    100.0 * since["correct"] / since["seen"], test_loss, test_acc)):
                self.history[name].append(value)
            self.since = mnist.no_running()


def train_with_history(limit: int, epochs: int, seed: int = 1, batch_size: int = 64,
                       eval_every: int = 20, test_limit: int = 1000,
                       data_dir: Path = mnist.DEFAULT_DATA_DIR):
    """Train mnist.py's small net with mnist.fit on the first `limit` training images with
    Adam, recording a HistoryRun. Returns (model, history: dict of equal-length lists)."""
    loader, test_loader = mnist.make_loaders(argparse.Namespace(
        data_dir=data_dir, limit=limit, test_limit=test_limit, batch_size=batch_size, seed=seed))
    tinygrad_conv.manual_seed(seed)
    model = mnist.make_model("small")
    optimizer = Adam(model.parameters(), lr=1e-3)
    run = HistoryRun(epochs, model, test_loader, eval_every)
    mnist.fit(model, optimizer, None, loader, test_loader, epochs, run)
    return model, run.history


def load_model(path: Path) -> nn.Sequential:
    """The model saved by `examples/mnist.py --save path` (its --model is in the checkpoint)."""
    state = tinygrad_conv.load(path)
    model = mnist.make_model(state["run"]["model"])
    model.load_state_dict(state["model"])
    return model


# ---- drawing (matplotlib) -------------------------------------------------------------------


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("plots.py: matplotlib is needed to draw; pip install matplotlib") from None
    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt
    return plt


def plot_filters(filters: np.ndarray, path: Path) -> None:
    """One grey image per kernel, each on a symmetric scale (white > 0 > black)."""
    plt = _pyplot()
    cols = min(8, len(filters))
    rows = -(-len(filters) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.3 * rows + 0.5), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, k) in enumerate(zip(axes.flat, filters)):
        bound = float(np.abs(k).max()) or 1.0
        ax.imshow(k, cmap="gray", vmin=-bound, vmax=bound)
        ax.set_title(str(i), fontsize=8)
    fig.suptitle(f"first conv layer: {len(filters)} kernels of {filters.shape[1]}x"
                 f"{filters.shape[2]}")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_feature_maps(images: np.ndarray, maps: list[tuple[str, np.ndarray]], path: Path,
                      channels: int = 6) -> None:
    """For each image: the digit, then the first `channels` maps of each layer in a row."""
    plt = _pyplot()
    n_img, n_layers = len(images), len(maps)
    fig, axes = plt.subplots(n_img * n_layers, channels + 1,
                             figsize=(1.1 * (channels + 1), 1.15 * n_img * n_layers + 0.5),
                             squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n_img):
        for j, (name, fmap) in enumerate(maps):
            row = axes[i * n_layers + j]
            if j == 0:
                row[0].imshow(images[i, 0], cmap="gray")
                row[0].set_title(f"digit {i}", fontsize=8)
            for c in range(min(channels, fmap.shape[1])):
                row[c + 1].imshow(fmap[i, c], cmap="viridis")
            row[1].set_title(name, fontsize=8, loc="left")
    fig.suptitle("feature maps (first channels of each layer)")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_history(history: dict[str, list], path: Path) -> None:
    """Loss and accuracy against the training step, training and test side by side."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, what, unit in ((left, "loss", "cross-entropy"), (right, "accuracy", "%")):
        ax.plot(history["step"], history[f"train_{what}"], label="training (since last point)")
        ax.plot(history["step"], history[f"test_{what}"], label="test")
        ax.set_xlabel("step")
        ax.set_ylabel(unit)
        ax.set_title(what)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---- the script -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("plots"), help="folder for the PNGs")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="a checkpoint from examples/mnist.py --save (else: train a small net)")
    p.add_argument("--limit", type=int, default=6000, help="training images (when training)")
    p.add_argument("--epochs", type=int, default=1, help="epochs (when training)")
    p.add_argument("--eval-every", type=int, default=10, help="steps between curve points")
    p.add_argument("--digits", type=int, default=2, help="test digits in feature_maps.png")
    p.add_argument("--data-dir", type=Path, default=mnist.DEFAULT_DATA_DIR)
    args = p.parse_args(argv)
    for name in ("limit", "epochs", "eval_every", "digits"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def main(argv: list[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    _pyplot()  # fail before training when matplotlib is missing
    if args.checkpoint is not None:
        model, history = load_model(args.checkpoint), None
    else:
        model, history = train_with_history(args.limit, args.epochs, eval_every=args.eval_every,
                                            data_dir=args.data_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    written = [args.out / "filters.png", args.out / "feature_maps.png"]
    plot_filters(first_layer_filters(model), written[0])
    digits = normalized(MNIST(args.data_dir, train=False).images[:args.digits])
    plot_feature_maps(digits, feature_maps(model, digits), written[1])
    if history is not None and history["step"]:
        written.append(args.out / "curves.png")
        plot_history(history, written[2])
    for path in written:
        print(f"wrote {path}")
    return written


if __name__ == "__main__":
    main()
