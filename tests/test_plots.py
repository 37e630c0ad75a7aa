"""examples/plots.py: feature maps against PyTorch's layers, the training history, loading a
mnist.py checkpoint, and (with matplotlib) the PNGs themselves."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import tinygrad_conv
from tinygrad_conv import nn

from helpers import load_example

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def plots():
    return load_example("plots")


def test_feature_maps_match_pytorchs_layer_outputs(plots):
    tinygrad_conv.manual_seed(0)
    model = plots.mnist.make_model("small")
    images = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    maps = plots.feature_maps(model, images)
    assert [name for name, _ in maps] == [
        "0: Conv2d", "1: ReLU", "2: MaxPool2d", "3: Conv2d", "4: ReLU", "5: MaxPool2d"]

    state = {k: torch.tensor(v) for k, v in model.state_dict().items()}  # numpy arrays
    x = torch.tensor(images)
    conv = torch.nn.functional.conv2d
    expected = []
    for i in (0, 3):
        x = conv(x, state[f"{i}.weight"], state[f"{i}.bias"], padding=1)
        expected.append(x)
        x = x.relu()
        expected.append(x)
        x = torch.max_pool2d(x, 2)
        expected.append(x)
    for (name, ours), theirs in zip(maps, expected):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-5, atol=1e-5, err_msg=name)


def test_first_layer_filters_are_the_first_convs_kernels(plots):
    model = nn.Sequential(nn.ReLU(), nn.Conv2d(2, 3, (3, 2)), nn.Conv2d(3, 4, 1))
    weights = np.arange(3 * 2 * 3 * 2, dtype=np.float32).reshape(3, 2, 3, 2)
    model.load_state_dict({"1.weight": weights, "1.bias": np.zeros(3, np.float32),
                           "2.weight": np.zeros((4, 3, 1, 1), np.float32),
                           "2.bias": np.zeros(4, np.float32)})
    np.testing.assert_array_equal(plots.first_layer_filters(model), weights[:, 0])
    with pytest.raises(ValueError, match="has no Conv2d layer"):
        plots.first_layer_filters(nn.Sequential(nn.ReLU()))
    with pytest.raises(TypeError, match="needs an nn.Sequential"):
        plots.feature_maps(nn.ReLU(), np.zeros((1, 1, 4, 4), np.float32))


def test_normalized_images_are_what_the_network_sees(plots):
    images = np.array([[[0, 255]]], dtype=np.uint8)
    mean, std = 0.1307, 0.3081
    np.testing.assert_allclose(plots.normalized(images),
                               [[[[-mean / std, (1 - mean) / std]]]], rtol=1e-6)


def test_training_records_a_history_and_learns(plots):
    model, history = plots.train_with_history(limit=640, epochs=1, eval_every=2, test_limit=200)
    assert set(history) == {"step", "train_loss", "train_accuracy", "test_loss",
                            "test_accuracy"}
    assert history["step"] == [2, 4, 6, 8, 10]
    assert all(len(v) == 5 for v in history.values())
    assert history["test_loss"][-1] < history["test_loss"][0] < 2.5
    assert 0 <= min(history["test_accuracy"]) and max(history["test_accuracy"]) <= 100


def test_a_mnist_checkpoint_loads_into_the_model_it_was_saved_from(plots, tmp_path):
    tinygrad_conv.manual_seed(3)
    model = plots.mnist.make_model("small")
    path = tmp_path / "ckpt.npz"
    tinygrad_conv.save({"model": dict(model.state_dict()), "run": {"model": "small"}}, path)
    loaded = plots.load_model(path)
    expected = model.state_dict()
    assert list(loaded.state_dict()) == list(expected)
    for name, array in loaded.state_dict().items():
        np.testing.assert_array_equal(array, expected[name], err_msg=name)


def test_without_matplotlib_it_says_how_to_install_it(plots, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(SystemExit, match="pip install matplotlib"):
        plots.main(["--out", "unused", "--limit", "64"])


def test_writes_filter_feature_map_and_curve_pngs(plots, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    written = plots.main(["--out", str(tmp_path), "--limit", "256", "--eval-every", "2"])
    assert [p.name for p in written] == ["filters.png", "feature_maps.png", "curves.png"]
    for path in written:
        assert path.read_bytes()[:8] == PNG
    assert capsys.readouterr().out.count("wrote ") == 3


def test_from_a_checkpoint_writes_no_curves(plots, tmp_path):
    pytest.importorskip("matplotlib")
    tinygrad_conv.manual_seed(3)
    model = plots.mnist.make_model("small")
    path = tmp_path / "ckpt.npz"
    tinygrad_conv.save({"model": dict(model.state_dict()), "run": {"model": "small"}}, path)
    written = plots.main(["--out", str(tmp_path / "out"), "--checkpoint", str(path)])
    assert [p.name for p in written] == ["filters.png", "feature_maps.png"]
