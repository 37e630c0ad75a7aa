"""Module buffers: registration, PyTorch's names and order in state_dict, persistence, dtype
conversion with to(), and loading them back, against torch.nn.Module."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinygrad_conv import Tensor, checkpoint, nn
from tinygrad_conv.nn import Parameter


class Ours(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 3)
        self.register_buffer("scale", np.full(3, 2.0))                       # float64 array
        self.register_buffer("count", np.array(0, dtype=np.int64))
        self.register_buffer("cache", np.zeros(3, np.float32), persistent=False)
        self.register_buffer("nothing", None)
        self.inner = nn.Sequential(nn.BatchNorm1d(3))


class Theirs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(2, 3)
        self.register_buffer("scale", torch.full((3,), 2.0, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(0))
        self.register_buffer("cache", torch.zeros(3), persistent=False)
        self.register_buffer("nothing", None)
        self.inner = torch.nn.Sequential(torch.nn.BatchNorm1d(3))


def test_buffer_names_and_state_dict_order_match_pytorch():
    ours, theirs = Ours(), Theirs()
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert "cache" not in ours.state_dict()                          # not persistent
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers(recurse=False)] == ["scale", "count", "cache"]


def test_buffers_are_tensors_that_keep_their_dtype_and_need_no_grad():
    ours = Ours()
    assert isinstance(ours.scale, Tensor) and not isinstance(ours.scale, Parameter)
    assert ours.scale.dtype == np.float64 and ours.count.dtype == np.int64
    assert ours.cache.dtype == np.float32 and ours.nothing is None
    assert not any(b.requires_grad for b in ours.buffers())
    assert all(id(b) not in {id(p) for p in ours.parameters()} for b in ours.buffers())


def test_state_dict_values_are_contiguous_copies_and_load_back_in_place(tmp_path):
    ours = Ours()
    state = ours.state_dict()
    for name, value in state.items():
        assert type(value) is np.ndarray and value.flags.c_contiguous, name
    state["scale"][...] = 7                       # a copy: the module is untouched
    assert np.all(ours.scale.data == 2)
    held = ours.scale.data
    checkpoint.save({"model": dict(state)}, tmp_path / "m.npz")
    ours.load_state_dict(checkpoint.load(tmp_path / "m.npz")["model"])
    assert ours.scale.data is held and np.all(held == 7)


def test_state_dict_round_trips_with_pytorch_both_ways():
    ours, theirs = Ours(), Theirs()
    theirs.scale.fill_(3.5)
    theirs.count.fill_(4)
    ours.load_state_dict(theirs.state_dict())
    assert ours.count.data == 4 and np.all(ours.scale.data == 3.5)
    back = Theirs()
    back.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    for name, value in theirs.state_dict().items():
        assert torch.equal(back.state_dict()[name], value), name


def test_load_state_dict_checks_buffers_like_parameters():
    ours = Ours()
    state = ours.state_dict()
    with pytest.raises(ValueError, match="'count' has dtype float64, the buffer has int64"):
        ours.load_state_dict({**state, "count": np.array(1.0)})
    with pytest.raises(ValueError, match=r"'scale' has shape \(2,\), the buffer has \(3,\)"):
        ours.load_state_dict({**state, "scale": np.zeros(2)})
    with pytest.raises(ValueError, match=r"missing keys \['inner.0.running_var'\]"):
        ours.load_state_dict({k: v for k, v in state.items() if k != "inner.0.running_var"})
    with pytest.raises(ValueError, match=r"unexpected keys \['cache'\]"):
        ours.load_state_dict({**state, "cache": np.zeros(3, np.float32)})


def test_assigning_to_a_buffer_name_replaces_the_value_and_keeps_it_a_buffer():
    ours = Ours()
    ours.scale = np.ones(3, np.float32)
    assert ours.scale.dtype == np.float32 and "scale" in dict(ours.named_buffers())
    ours.scale = None
    assert "scale" not in ours.state_dict() and ours.scale is None
    ours.scale = Parameter(np.ones(3))          # a Parameter takes the name over
    assert "scale" in dict(ours.named_parameters()) and "scale" not in ours._buffers
    del ours.count
    assert "count" not in ours.state_dict()
    with pytest.raises(TypeError, match="buffer 'cache' must be a Tensor, a numpy array or None"):
        ours.cache = 3.0


def test_to_converts_float_buffers_and_keeps_integer_ones():
    ours = Ours()
    scale = ours.scale
    ours.float()
    assert ours.scale is scale and scale.dtype == np.float32
    assert ours.count.dtype == np.int64 and ours.cache.dtype == np.float32
    ours.double()
    assert ours.inner[0].running_mean.dtype == np.float64 and ours.cache.dtype == np.float64


def test_shared_buffer_is_listed_once():
    bn = nn.BatchNorm1d(2)
    model = nn.Sequential(bn, nn.ReLU(), bn)
    assert [n for n, _ in model.named_buffers()] == [
        "0.running_mean", "0.running_var", "0.num_batches_tracked"]


@pytest.mark.parametrize("call, error, match", [
    (lambda m: m.register_buffer("a.b", np.zeros(1)), ValueError, "contain no '.'"),
    (lambda m: m.register_buffer("", np.zeros(1)), ValueError, "non-empty"),
    (lambda m: m.register_buffer(3, np.zeros(1)), TypeError, "name must be a str"),
    (lambda m: m.register_buffer("fc", np.zeros(1)), ValueError,
     "attribute 'fc' already exists and is not a buffer"),
    (lambda m: m.register_buffer("b", [1.0, 2.0]), TypeError,
     "buffer 'b' must be a Tensor, a numpy array or None, got list"),
    (lambda m: m.register_buffer("b", np.zeros(2, np.int32)), TypeError,
     "float32, float64 or int64, got an array of int32"),
    (lambda m: m.register_buffer("b", Parameter(np.zeros(2))), TypeError,
     "'b' is a Parameter, which cannot be a buffer"),
    (lambda m: m.register_buffer("b", np.zeros(2), persistent=1), TypeError,
     "persistent must be a bool"),
])
def test_register_buffer_rejects_bad_arguments_naming_the_module(call, error, match):
    with pytest.raises(error, match=f"Ours.*{match}"):
        call(Ours())
