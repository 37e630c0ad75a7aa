"""optim.lr_scheduler against torch.optim.lr_scheduler: the learning rate (and OneCycleLR's
momentum) at every step, resuming from a state dict, and clear errors for bad arguments."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinygrad_conv import checkpoint, optim
from tinygrad_conv.optim import SGD, Adam, AdamW
from tinygrad_conv.optim.lr_scheduler import (
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    OneCycleLR,
    StepLR,
)


class Param:
    def __init__(self, data: np.ndarray) -> None:
        self.data, self.grad = data, None


SCHEDULES = [
    ("StepLR", dict(step_size=3), 20),
    ("StepLR", dict(step_size=1, gamma=0.7), 15),
    ("MultiStepLR", dict(milestones=[8, 2, 5, 5], gamma=0.3), 15),
    ("MultiStepLR", dict(milestones=[0, 4]), 8),
    ("LinearLR", dict(), 10),
    ("LinearLR", dict(start_factor=1.0, end_factor=0.0, total_iters=12), 14),
    ("LinearLR", dict(start_factor=0.1, end_factor=0.8, total_iters=4), 9),
    ("CosineAnnealingLR", dict(T_max=10), 35),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=0.01), 30),
    ("OneCycleLR", dict(max_lr=3e-3, total_steps=50), 50),
    ("OneCycleLR", dict(max_lr=0.5, epochs=3, steps_per_epoch=7, pct_start=0.25,
                        anneal_strategy="linear", div_factor=10.0, final_div_factor=100.0), 21),
    ("OneCycleLR", dict(max_lr=0.2, total_steps=40, three_phase=True, base_momentum=0.8,
                        max_momentum=0.9), 40),
    ("OneCycleLR", dict(max_lr=0.2, total_steps=9, cycle_momentum=False), 9),
]
OPTIMIZERS = [
    (lambda ps: SGD(ps, lr=0.1, momentum=0.9),
     lambda ts: torch.optim.SGD(ts, lr=0.1, momentum=0.9)),
    (lambda ps: Adam(ps, lr=0.01), lambda ts: torch.optim.Adam(ts, lr=0.01)),
    (lambda ps: AdamW(ps, lr=0.02, weight_decay=0.1),
     lambda ts: torch.optim.AdamW(ts, lr=0.02, weight_decay=0.1)),
]


class Run:
    """An optimizer and its schedule in both frameworks, on one parameter with random grads."""

    def __init__(self, name: str, config: dict, make, make_torch, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        start = self.rng.standard_normal(6)
        self.param = Param(start.copy())
        self.tensor = torch.tensor(start.copy(), requires_grad=True)
        self.opt, self.topt = make([self.param]), make_torch([self.tensor])
        self.sched = getattr(optim.lr_scheduler, name)(self.opt, **config)
        self.tsched = getattr(torch.optim.lr_scheduler, name)(self.topt, **config)

    def step(self, opt=None, sched=None) -> None:
        g = self.rng.standard_normal(6)
        self.param.grad, self.tensor.grad = g.copy(), torch.from_numpy(g.copy())
        (opt or self.opt).step()
        self.topt.step()
        (sched or self.sched).step()
        self.tsched.step()

    def assert_same(self, what: str, opt=None) -> None:
        opt = opt or self.opt
        group = self.topt.param_groups[0]
        # (a linear one-cycle ends one step past its end, where PyTorch's rate is negative)
        expected = max(group["lr"], 0.0)
        np.testing.assert_allclose(opt.lr, expected, rtol=1e-12, atol=1e-18, err_msg=what)
        if hasattr(opt, "beta1"):
            assert opt.beta1 == pytest.approx(group["betas"][0], rel=1e-12), what
        elif hasattr(opt, "momentum"):
            assert opt.momentum == pytest.approx(group["momentum"], rel=1e-12), what
        np.testing.assert_allclose(self.param.data, self.tensor.detach().numpy(), rtol=1e-10,
                                   atol=1e-12, err_msg=what)


@pytest.mark.parametrize("make, make_torch", OPTIMIZERS, ids=["SGD", "Adam", "AdamW"])
@pytest.mark.parametrize("name, config, steps", SCHEDULES,
                         ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(SCHEDULES)])
def test_learning_rate_and_momentum_follow_pytorch_step_for_step(name, config, steps, make,
                                                                  make_torch):
    run = Run(name, config, make, make_torch)
    run.assert_same("at construction")
    assert run.sched.get_last_lr() == pytest.approx(run.tsched.get_last_lr(), rel=1e-12)
    for step in range(steps):
        run.step()
        run.assert_same(f"after step {step + 1}")
        assert run.sched.last_epoch == run.tsched.last_epoch


@pytest.mark.parametrize("name, config, steps", [SCHEDULES[2], SCHEDULES[8], SCHEDULES[11]],
                         ids=["MultiStepLR", "CosineAnnealingLR", "OneCycleLR"])
def test_a_run_resumed_from_state_dicts_continues_exactly(name, config, steps, tmp_path):
    make, make_torch = OPTIMIZERS[1]
    run = Run(name, config, make, make_torch)
    half = steps // 2
    for _ in range(half):
        run.step()
    checkpoint.save({"optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict()},
                    tmp_path / "run.npz")
    lr_at_save = run.opt.lr
    for _ in range(3):        # the original keeps going: the saved dicts hold copies
        run.opt.lr = 5.0
        run.sched.step()
    saved = checkpoint.load(tmp_path / "run.npz")
    run.param.data[...] = run.tensor.detach().numpy()
    # a fresh optimizer and schedule, built with other values, as a resumed script builds them
    fresh_opt = Adam([run.param], lr=0.5)
    fresh = getattr(optim.lr_scheduler, name)(fresh_opt, **config)
    fresh_opt.load_state_dict(saved["optimizer"])
    fresh.load_state_dict(saved["scheduler"])
    assert fresh.last_epoch == half and fresh.get_last_lr() == [lr_at_save] == [fresh_opt.lr]
    run.assert_same("resumed", opt=fresh_opt)
    for step in range(half, steps):
        run.step(opt=fresh_opt, sched=fresh)
        run.assert_same(f"after step {step + 1}", opt=fresh_opt)


def test_one_cycle_refuses_to_step_past_total_steps_like_pytorch():
    opt = SGD([Param(np.zeros(2))], lr=0.1, momentum=0.9)
    topt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1, momentum=0.9)
    ours, theirs = OneCycleLR(opt, 1.0, total_steps=4), \
        torch.optim.lr_scheduler.OneCycleLR(topt, 1.0, total_steps=4)
    for _ in range(4):
        opt.step()
        topt.step()
        ours.step()
        theirs.step()
    with pytest.raises(ValueError, match="Tried to step 5 times"):
        theirs.step()
    with pytest.raises(ValueError, match="OneCycleLR: tried to step 5 times, but total_steps is 4"):
        ours.step()
    assert ours.last_epoch == 4


def test_state_dict_holds_the_step_and_hyper_parameters_as_savable_leaves():
    sched = MultiStepLR(SGD([Param(np.zeros(2))], lr=0.1), milestones=[3, 1])
    sched.step()
    sd = sched.state_dict()
    assert sd["type"] == "MultiStepLR" and sd["last_epoch"] == 1 and sd["base_lr"] == 0.1
    np.testing.assert_array_equal(sd["milestones"], [1, 3])
    for value in sd.values():
        assert type(value) in (np.ndarray, int, float, bool, str)


def sgd() -> SGD:
    return SGD([Param(np.zeros(2))], lr=0.1, momentum=0.9)


@pytest.mark.parametrize("change, error, match", [
    (lambda sd: sd.update(type="StepLR"), ValueError, "for StepLR, not CosineAnnealingLR"),
    (lambda sd: sd.pop("T_max"), ValueError, "has keys"),
    (lambda sd: sd.update(T_max=0), ValueError, "T_max must be >= 1, got 0"),
    (lambda sd: sd.update(last_epoch=-2), ValueError, "last_epoch must be >= 0"),
    (lambda sd: sd.update(eta_min="x"), TypeError, "eta_min must be a real number"),
], ids=["type", "missing", "T_max", "last_epoch", "eta_min"])
def test_load_state_dict_rejects_a_mismatch_and_changes_nothing(change, error, match):
    sd = CosineAnnealingLR(sgd(), T_max=5).state_dict()
    change(sd)
    target = CosineAnnealingLR(sgd(), T_max=9)
    target.step()
    before = target.state_dict()
    with pytest.raises(error, match=match):
        target.load_state_dict(sd)
    assert target.state_dict() == before


class NoMomentum(optim.Optimizer):
    """An optimizer with neither momentum nor beta1, which OneCycleLR cannot cycle."""

    def __init__(self, params) -> None:
        super().__init__(params)
        self.lr = 0.1


@pytest.mark.parametrize("make, error, match", [
    (lambda: StepLR(sgd(), step_size=0), ValueError, "StepLR: step_size must be >= 1, got 0"),
    (lambda: StepLR(sgd(), step_size=-3), ValueError, "StepLR: step_size must be >= 1, got -3"),
    (lambda: StepLR(sgd(), step_size=2.5), TypeError, "StepLR: step_size must be an int"),
    (lambda: StepLR(sgd(), step_size=2, gamma=-0.1), ValueError, "StepLR: gamma must be >= 0"),
    (lambda: MultiStepLR(sgd(), milestones=[2, -1]), ValueError,
     "MultiStepLR: each milestone must be >= 0, got -1"),
    (lambda: MultiStepLR(sgd(), milestones=5), TypeError, "MultiStepLR: milestones must be"),
    (lambda: LinearLR(sgd(), total_iters=0), ValueError, "LinearLR: total_iters must be >= 1"),
    (lambda: LinearLR(sgd(), start_factor=0), ValueError,
     r"LinearLR: start_factor must be in \(0.0, 1.0\], got 0.0"),
    (lambda: LinearLR(sgd(), end_factor=1.5), ValueError, "LinearLR: end_factor must be in"),
    (lambda: CosineAnnealingLR(sgd(), T_max=0), ValueError, "CosineAnnealingLR: T_max must be"),
    (lambda: CosineAnnealingLR(sgd(), T_max=3, eta_min=-1), ValueError, "eta_min must be >= 0"),
    (lambda: OneCycleLR(sgd(), 0.1), ValueError, "OneCycleLR: give total_steps"),
    (lambda: OneCycleLR(sgd(), 0.1, total_steps=0), ValueError,
     "OneCycleLR: total_steps must be >= 1, got 0"),
    (lambda: OneCycleLR(sgd(), 0.1, epochs=2, steps_per_epoch=0), ValueError,
     "OneCycleLR: steps_per_epoch must be >= 1"),
    (lambda: OneCycleLR(sgd(), -0.1, total_steps=10), ValueError, "OneCycleLR: max_lr must be"),
    (lambda: OneCycleLR(sgd(), 0.1, total_steps=10, pct_start=1.5), ValueError,
     r"OneCycleLR: pct_start must be in \[0.0, 1.0\], got 1.5"),
    (lambda: OneCycleLR(sgd(), 0.1, total_steps=10, pct_start=0.1), ValueError,
     "OneCycleLR: pct_start 0.1 with total_steps 10 gives a phase of no steps"),
    (lambda: OneCycleLR(sgd(), 0.1, total_steps=10, anneal_strategy="exp"), ValueError,
     "OneCycleLR: anneal_strategy must be 'cos' or 'linear', got 'exp'"),
    (lambda: OneCycleLR(sgd(), 0.1, total_steps=10, max_momentum=1.0), ValueError,
     "OneCycleLR: max_momentum must be in"),
    (lambda: OneCycleLR(NoMomentum([Param(np.zeros(2))]), 0.1, total_steps=10), ValueError,
     "OneCycleLR: cycle_momentum needs an optimizer with momentum or beta1"),
    (lambda: StepLR(torch.optim.SGD([torch.zeros(1)], lr=0.1), 2), TypeError,
     "StepLR: optimizer must be a tinygrad_conv.optim optimizer, got SGD"),
])
def test_bad_arguments_name_the_class_and_the_argument(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_lr_scheduler_is_reachable_under_pytorchs_names():
    import tinygrad_conv.optim.lr_scheduler as by_path

    assert by_path is optim.lr_scheduler
    assert issubclass(OneCycleLR, LRScheduler) and OneCycleLR.__module__ == by_path.__name__
    sched = StepLR(sgd(), 2)
    assert sched.base_lrs == [0.1] and sched.get_last_lr() == [0.1]
