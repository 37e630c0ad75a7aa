"""SGD, Adam and AdamW against torch.optim, step for step, on the same parameters and
gradients."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygrad_conv import Tensor, checkpoint
from tinygrad_conv.optim import SGD, Adam, AdamW

from helpers import assert_close

SHAPES = [(4, 3, 3, 3), (4,), (), (7, 5)]  # a conv weight, a bias, a scalar, a matrix
SKIPPED = 1  # this parameter gets no gradient on every third step


@dataclass(eq=False)
class Param:
    """The optimizer's view of a parameter: `.data`, updated in place, and `.grad`."""

    data: np.ndarray
    grad: np.ndarray | None = None


SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.1, momentum=0.9, dampening=0.3),
    dict(lr=0.1, momentum=0.9, nesterov=True),
    dict(lr=0.1, weight_decay=0.01),
    dict(lr=0.05, momentum=0.8, weight_decay=0.1, nesterov=True),
    dict(lr=0.05, momentum=0.5, dampening=0.5, weight_decay=0.1),
]
ADAM_CONFIGS = [
    dict(),
    dict(lr=0.01, weight_decay=0.1),
    dict(lr=0.01, amsgrad=True),
    dict(lr=0.02, betas=(0.3, 0.5), eps=1e-6, weight_decay=0.05, amsgrad=True),
]
ADAMW_CONFIGS = [
    dict(),
    dict(lr=0.05, weight_decay=0.3),
    dict(lr=0.02, betas=(0.5, 0.9), eps=1e-6, weight_decay=0.1, amsgrad=True),
]
CASES = [(SGD, torch.optim.SGD, c) for c in SGD_CONFIGS] + [
    (Adam, torch.optim.Adam, c) for c in ADAM_CONFIGS] + [
    (AdamW, torch.optim.AdamW, c) for c in ADAMW_CONFIGS]
IDS = [f"{ours.__name__}-{'-'.join(f'{k}={v}' for k, v in c.items()) or 'defaults'}"
       for ours, _, c in CASES]


class Pair:
    """Our optimizer and torch's over parameters with the same initial values."""

    def __init__(self, ours, theirs, config, seed=0, dtype=np.float64, frozen=None):
        self.frozen = frozen  # the index of a parameter that never gets a gradient
        self.rng = np.random.default_rng(seed)
        self.dtype = dtype
        init = [np.asarray(self.rng.standard_normal(s), dtype=dtype) for s in SHAPES]
        self.params = [Param(a.copy()) for a in init]
        self.tensors = [torch.tensor(a.copy(), requires_grad=True) for a in init]
        self.ours = ours(self.params, **config)
        self.theirs = theirs(self.tensors, **config, foreach=False)
        self.steps = 0

    def step(self, optimizer=None):
        """Give both the same random gradients (none for SKIPPED every third step), step both."""
        for i, (p, t) in enumerate(zip(self.params, self.tensors, strict=True)):
            if i == self.frozen or (i == SKIPPED and self.steps % 3 == 1):
                p.grad, t.grad = None, None
                continue
            scale = self.rng.uniform(0.1, 3.0)  # varying scales make amsgrad's max matter
            g = np.asarray(self.rng.standard_normal(p.data.shape) * scale, dtype=self.dtype)
            p.grad, t.grad = g.copy(), torch.from_numpy(g.copy())
        (optimizer or self.ours).step()
        self.theirs.step()
        self.steps += 1

    def assert_close(self, rtol=1e-12):
        for i, (p, t) in enumerate(zip(self.params, self.tensors, strict=True)):
            expected = t.detach().numpy()
            assert p.data.dtype == expected.dtype
            # NOTE: torch's vectorised loops use fused multiply-adds, numpy rounds twice, so an
            # element that cancels to near 0 may differ by an ulp of the tensor's scale (which
            # is what assert_close's rtol is relative to)
            assert_close(p.data, expected, rtol, f"parameter {i} after step {self.steps}")


@pytest.mark.parametrize("ours, theirs, config", CASES, ids=IDS)
def test_every_step_matches_torch_in_float64(ours, theirs, config):
    pair = Pair(ours, theirs, config)
    for _ in range(20):
        pair.step()
        pair.assert_close()


@pytest.mark.parametrize("ours, theirs, config", CASES, ids=IDS)
def test_float32_parameters_stay_float32_and_match_torch(ours, theirs, config):
    pair = Pair(ours, theirs, config, dtype=np.float32)
    for _ in range(20):
        pair.step()
        pair.assert_close(rtol=1e-4)
    for state in pair.ours.state.values():
        for key, value in state.items():
            assert key == "step" or value.dtype == np.float32


def test_step_updates_data_in_place():
    p = Param(np.ones((2, 3)), grad=np.full((2, 3), 0.5))
    held = p.data  # what a module keeps a reference to
    Adam([p], lr=0.1).step()
    t = torch.ones((2, 3), dtype=torch.float64, requires_grad=True)
    t.grad = torch.full((2, 3), 0.5, dtype=torch.float64)
    torch.optim.Adam([t], lr=0.1).step()
    assert p.data is held
    np.testing.assert_allclose(held, t.detach().numpy(), rtol=1e-15)


@pytest.mark.parametrize("ours, theirs, config", [CASES[3], CASES[-1]], ids=[IDS[3], IDS[-1]])
def test_parameter_that_never_gets_a_grad_is_untouched_and_has_no_state(ours, theirs, config):
    pair = Pair(ours, theirs, config, frozen=0)
    before = pair.params[0].data.copy()
    for _ in range(5):
        pair.step()
        pair.assert_close()
    np.testing.assert_array_equal(pair.params[0].data, before)
    with_state = [i for i, t in enumerate(pair.tensors) if pair.theirs.state.get(t)]
    assert sorted(pair.ours.state) == with_state == [1, 2, 3]


def test_skipped_parameter_keeps_its_value_and_state_like_torch():
    rng = np.random.default_rng(1)
    a = rng.standard_normal(5)
    p, t = Param(a.copy()), torch.tensor(a.copy(), requires_grad=True)
    ours = SGD([p], lr=0.1, momentum=0.9)
    theirs = torch.optim.SGD([t], lr=0.1, momentum=0.9)
    for k in range(6):
        g = rng.standard_normal(5) if k in (0, 4) else None
        p.grad = g
        t.grad = None if g is None else torch.from_numpy(g.copy())
        ours.step()
        theirs.step()
        np.testing.assert_array_equal(p.data, t.detach().numpy())
    np.testing.assert_array_equal(ours.state[0]["momentum_buffer"],
                                  theirs.state[t]["momentum_buffer"].numpy())


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad_like_torch(set_to_none):
    grads = [np.arange(6.0).reshape(2, 3), None]
    params = [Param(np.ones((2, 3)), grads[0]), Param(np.ones(4), grads[1])]
    tensors = [torch.ones((2, 3), dtype=torch.float64, requires_grad=True),
               torch.ones(4, dtype=torch.float64, requires_grad=True)]
    tensors[0].grad = torch.arange(6.0, dtype=torch.float64).reshape(2, 3)
    SGD(params, lr=0.1).zero_grad(set_to_none=set_to_none)
    torch.optim.SGD(tensors, lr=0.1).zero_grad(set_to_none=set_to_none)
    for p, t in zip(params, tensors, strict=True):
        if t.grad is None:
            assert p.grad is None
        else:
            np.testing.assert_array_equal(p.grad, t.grad.numpy())
    if not set_to_none:
        assert params[0].grad is grads[0]  # zeroed in place, so views of it see the zeros


def test_lr_changed_between_steps_like_torch():
    pair = Pair(SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9))
    for lr in [0.1, 0.05, 0.0, 0.2, 0.01]:
        pair.ours.lr = lr
        for group in pair.theirs.param_groups:
            group["lr"] = lr
        pair.step()
        pair.assert_close()


@pytest.mark.parametrize("ours, theirs, config", [
    (SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    (SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.5, dampening=0.3)),
    (Adam, torch.optim.Adam, dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    (AdamW, torch.optim.AdamW, dict(lr=0.01, weight_decay=0.2)),
], ids=["SGD-nesterov", "SGD-dampening", "Adam-amsgrad", "AdamW"])
def test_state_dict_round_trip_through_a_checkpoint_continues_exactly(
        ours, theirs, config, tmp_path):
    pair = Pair(ours, theirs, config)
    for _ in range(10):
        pair.step()
    saved = pair.ours.state_dict()
    values = [p.data.copy() for p in pair.params]
    for _ in range(3):  # keep training the original: the saved dict must hold copies
        pair.ours.step()
    checkpoint.save({"optimizer": saved}, tmp_path / "run.npz")

    for p, v in zip(pair.params, values, strict=True):
        p.data[...] = v
    # different hyper-parameters, which loading must replace with the saved ones
    fresh = ours(pair.params, lr=123.0)
    fresh.load_state_dict(checkpoint.load(tmp_path / "run.npz")["optimizer"])
    for _ in range(10):
        pair.step(optimizer=fresh)
        pair.assert_close()


def test_state_dict_leaves_are_arrays_or_python_scalars():
    pair = Pair(Adam, torch.optim.Adam, dict(amsgrad=True))
    pair.step()

    def leaves(tree):
        for key, value in tree.items():
            assert isinstance(key, str)
            yield from leaves(value) if isinstance(value, dict) else [value]

    sd = pair.ours.state_dict()
    assert sd["type"] == "Adam" and sd["n_params"] == len(SHAPES)
    assert set(sd["state"]["0"]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    for leaf in leaves(sd):
        assert type(leaf) in (np.ndarray, int, float, bool, str)


def _stepped(kind=Adam, **config):
    params = [Param(np.zeros((2, 3))), Param(np.zeros(3, dtype=np.float32))]
    opt = kind(params, **config)
    for p in params:
        p.grad = np.ones_like(p.data)
    opt.step()
    return opt


def _edit(sd, path, value):
    *parents, last = path
    node = sd
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return sd


@pytest.mark.parametrize("path, value, error, match", [
    (("type",), "SGD", ValueError, "for SGD, not Adam"),
    (("n_params",), 3, ValueError, "n_params=3"),
    (("state",), KeyError, ValueError, "missing key 'state'"),
    (("hyper", "eps"), KeyError, ValueError, "'hyper' has keys"),
    (("hyper", "lr"), -1.0, ValueError, "lr must be"),
    (("hyper", "amsgrad"), True, ValueError, r"state\['0'\] has keys"),
    (("state", "2"), {"step": 1}, ValueError, "state key '2'"),
    (("state", "0"), 1.0, TypeError, r"state\['0'\] must be a dict, got float"),
    (("hyper",), [0.1], TypeError, "'hyper' must be a dict, got list"),
    (("state", "0", "step"), 0, ValueError, r"\['step'\] must be >= 1, got 0"),
    (("state", "0", "exp_avg"), np.zeros((3, 2)), ValueError, r"shape \(3, 2\)"),
    (("state", "1", "exp_avg_sq"), np.zeros(3), TypeError, "is float64, the parameter is float32"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_load_state_dict_rejects_a_mismatch_and_changes_nothing(path, value, error, match):
    sd = _edit(_stepped(lr=0.01).state_dict(), path, value)
    target = _stepped(lr=0.5)
    before = target.state_dict()
    with pytest.raises(error, match=match):
        target.load_state_dict(sd)
    after = target.state_dict()
    assert after["hyper"] == before["hyper"]
    np.testing.assert_array_equal(after["state"]["0"]["exp_avg"], before["state"]["0"]["exp_avg"])


def test_load_state_dict_keeps_copies_so_training_leaves_the_dict_alone():
    sd = _stepped(lr=0.01).state_dict()
    kept = {i: {k: np.copy(v) for k, v in s.items()} for i, s in sd["state"].items()}
    target = _stepped(lr=0.5)
    target.load_state_dict(sd)
    target.step()
    for i, state in kept.items():
        for key, value in state.items():
            np.testing.assert_array_equal(sd["state"][i][key], value)


def test_load_state_dict_of_sgd_without_momentum_has_no_buffers():
    sd = _stepped(SGD, lr=0.1).state_dict()
    assert sd["state"] == {}
    target = _stepped(SGD, lr=0.1, momentum=0.9)  # has buffers, which the load must drop
    target.load_state_dict(sd)
    assert target.state == {} and target.momentum == 0.0


INVALID = [
    (SGD, dict(lr=-0.1), "lr must be"),
    (SGD, dict(lr=0.1, momentum=-0.5), "momentum must be"),
    (SGD, dict(lr=0.1, weight_decay=-1e-4), "weight_decay must be"),
    (SGD, dict(lr=0.1, nesterov=True), "nesterov needs momentum > 0 .* got momentum=0.0"),
    (SGD, dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
     "nesterov needs momentum > 0 and dampening == 0, got momentum=0.9, dampening=0.1"),
    (Adam, dict(lr=-1e-3), "lr must be"),
    (Adam, dict(eps=-1e-8), "eps must be"),
    (Adam, dict(betas=(1.0, 0.999)), r"betas\[0\] must be"),
    (Adam, dict(betas=(-0.1, 0.999)), r"betas\[0\] must be"),
    (Adam, dict(betas=(0.9, 1.0)), r"betas\[1\] must be"),
    (Adam, dict(weight_decay=-0.1), "weight_decay must be"),
    (AdamW, dict(lr=-1e-3), "lr must be"),
    (AdamW, dict(betas=(0.9, 1.5)), r"betas\[1\] must be"),
    (AdamW, dict(weight_decay=-0.01), "weight_decay must be"),
]


@pytest.mark.parametrize("ours, config, match", INVALID,
                         ids=[f"{o.__name__}-{'-'.join(c)}" for o, c, _ in INVALID])
def test_invalid_hyper_parameter_raises_value_error_like_torch(ours, config, match):
    with pytest.raises(ValueError):
        getattr(torch.optim, ours.__name__)([torch.zeros(2, requires_grad=True)], **config)
    with pytest.raises(ValueError, match=f"{ours.__name__}: {match}"):
        ours([Param(np.zeros(2))], **config)


@pytest.mark.parametrize("make, error, match", [
    (lambda: SGD([], lr=0.1), ValueError, "SGD: got an empty parameter list"),
    (lambda: Adam(iter([])), ValueError, "Adam: got an empty parameter list"),
    (lambda: Adam(Param(np.zeros(2))), TypeError, "iterable of parameters, got a single Param"),
    (lambda: Adam([Param(np.zeros(2, dtype=np.int64))]), TypeError, "parameter 0 must have"),
    (lambda: Adam(betas=(0.9,), params=[Param(np.zeros(2))]), TypeError, "betas must be a pair"),
    (lambda: SGD([Param(np.zeros(2))], lr="0.1"), TypeError, "lr must be a real number"),
    (lambda: SGD([Param(np.zeros(2))], lr=0.1, nesterov=1), TypeError, "nesterov must be a bool"),
], ids=["empty", "empty-iterator", "single", "int-data", "betas", "lr-str", "nesterov-int"])
def test_invalid_parameters_raise(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_parameter_given_twice_raises():
    p, q = Param(np.zeros(2)), Param(np.zeros(2))
    with pytest.raises(ValueError, match="parameter 2 is parameter 0 given twice"):
        SGD([p, q, p], lr=0.1)


def test_setting_a_negative_lr_raises_and_keeps_the_old_one():
    opt = SGD([Param(np.zeros(2))], lr=0.1)
    with pytest.raises(ValueError, match="SGD: lr must be >= 0.0, got -1.0"):
        opt.lr = -1.0
    assert opt.lr == 0.1


@pytest.mark.parametrize("grad, error, match", [
    (np.zeros(3), ValueError, r"shape \(2,\) but its grad has shape \(3,\)"),
    (np.zeros(2, dtype=np.float32), TypeError, "is float64 but its grad is float32"),
])
def test_step_rejects_a_grad_of_the_wrong_shape_or_dtype(grad, error, match):
    opt = Adam([Param(np.zeros(2), grad)])
    with pytest.raises(error, match=match):
        opt.step()


@settings(max_examples=30, deadline=None)
@given(
    kind=st.sampled_from(["SGD", "Adam", "AdamW"]),
    lr=st.floats(0.0, 1.0),
    momentum=st.floats(0.0, 0.99),
    dampening=st.floats(0.0, 1.0),
    beta1=st.floats(0.0, 0.999),
    beta2=st.floats(0.0, 0.9999),
    eps=st.floats(1e-10, 1e-2),
    weight_decay=st.floats(0.0, 0.5),
    flag=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_hyper_parameters_match_torch(kind, lr, momentum, dampening, beta1, beta2, eps,
                                             weight_decay, flag, seed):
    if kind == "SGD":
        nesterov = flag and momentum > 0
        config = dict(lr=lr, momentum=momentum, dampening=0.0 if nesterov else dampening,
                      weight_decay=weight_decay, nesterov=nesterov)
        pair = Pair(SGD, torch.optim.SGD, config, seed=seed)
    else:
        config = dict(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay,
                      amsgrad=flag)
        ours, theirs = (Adam, torch.optim.Adam) if kind == "Adam" else (AdamW, torch.optim.AdamW)
        pair = Pair(ours, theirs, config, seed=seed)
    for _ in range(8):
        pair.step()
        pair.assert_close(rtol=1e-11)


@pytest.mark.parametrize("make, make_torch", [
    (lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
     lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    (lambda ps: Adam(ps, lr=0.01, amsgrad=True), lambda ps: torch.optim.Adam(ps, lr=0.01,
                                                                          amsgrad=True)),
], ids=["SGD", "Adam"])
def test_training_loop_with_tensors_matches_torch(make, make_torch):
    rng = np.random.default_rng(3)
    x, w0, b0 = rng.standard_normal((8, 5)), rng.standard_normal((5, 3)), rng.standard_normal(3)
    w, b = Tensor(w0, requires_grad=True, dtype=np.float64), Tensor(b0, requires_grad=True,
                                                                    dtype=np.float64)
    tw, tb = torch.tensor(w0, requires_grad=True), torch.tensor(b0, requires_grad=True)
    xs = Tensor(x, dtype=np.float64)
    held = w.data
    opt, topt = make([w, b]), make_torch([tw, tb])
    for _ in range(10):
        opt.zero_grad()
        ((xs @ w + b).relu() * (xs @ w)).mean().backward()
        opt.step()
        topt.zero_grad()
        ((torch.from_numpy(x) @ tw + tb).relu() * (torch.from_numpy(x) @ tw)).mean().backward()
        topt.step()
        for ours, theirs in [(w, tw), (b, tb)]:
            np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-12,
                                       atol=1e-12 * theirs.abs().max().item())
    assert w.data is held
