"""Learning-rate schedules, PyTorch's `torch.optim.lr_scheduler` (import it as
`tinygrad_conv.optim.lr_scheduler`): StepLR, MultiStepLR, LinearLR, CosineAnnealingLR and
OneCycleLR, giving PyTorch's learning rates step for step.

    scheduler = OneCycleLR(optimizer, max_lr=3e-3, total_steps=epochs * len(loader))
    for x, y in loader:
        ...
        optimizer.step()
        scheduler.step()        # after the optimizer's step, as in PyTorch

A scheduler sets `optimizer.lr` when it is created (step 0) and at every `step()`. Each schedule
is written in closed form, the learning rate at step t as a function of t (`lr_at(t)`), where
PyTorch multiplies the current rate by a factor at each step: the numbers agree to rounding, and
differ only if something else also changes the rate during the run.

`state_dict()` holds the step count and the hyper-parameters (Python scalars, arrays and
strings, so `tinygrad_conv.save` writes it); `load_state_dict()` checks and restores it, and a
resumed run continues the schedule exactly. As in PyTorch, the optimizer's own state dict
restores its current learning rate.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping
from typing import Any

import numpy as np

from tinygrad_conv._args import flag, integer, real, unwrap
from tinygrad_conv.optim import Optimizer

__all__ = [
    "CosineAnnealingLR", "LRScheduler", "LinearLR", "MultiStepLR", "OneCycleLR", "StepLR",
]


class LRScheduler:
    """Base class: keeps the step count `last_epoch` and sets `optimizer.lr = lr_at(last_epoch)`.

    A subclass defines `_hyper_names`, `_checked_hyper(**hyper) -> dict` (validated values, used
    by both `__init__` and `load_state_dict`) and `lr_at(step)`.
    """

    _hyper_names: tuple[str, ...] = ()

    def __init__(self, optimizer: Optimizer, **hyper: Any) -> None:
        name = type(self).__name__
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{name}: optimizer must be a tinygrad_conv.optim optimizer, got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        for key, value in self._checked_hyper(**hyper).items():
            setattr(self, key, value)
        self.base_lr = self._initial_lr()
        self.last_epoch = 0
        self._apply()

    def _initial_lr(self) -> float:
        """The learning rate the schedule scales: the optimizer's, when the schedule starts."""
        return self.optimizer.lr

    @property
    def base_lrs(self) -> list[float]:
        """PyTorch's spelling: one learning rate per parameter group (we have one group)."""
        return [self.base_lr]

    def lr_at(self, step: int) -> float:
        raise NotImplementedError

    def step(self) -> None:
        """Advance one step and set the optimizer's learning rate for it."""
        self.last_epoch += 1
        self._apply()

    def _apply(self) -> None:
        self._last_lr = self.lr_at(self.last_epoch)
        self.optimizer.lr = self._last_lr

    def get_last_lr(self) -> list[float]:
        """The learning rate the last step (or the constructor) set, as a one-element list."""
        return [self._last_lr]

    def _checked_hyper(self, **hyper: Any) -> dict[str, Any]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """{"type", "last_epoch", "base_lr", and each hyper-parameter}."""
        state = {"type": type(self).__name__, "last_epoch": self.last_epoch,
                 "base_lr": self.base_lr}
        for key in self._hyper_names:
            value = getattr(self, key)
            state[key] = value.copy() if isinstance(value, np.ndarray) else value
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore `state_dict()` output; everything is checked before anything changes."""
        where = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"{where}: expected a dict, got {type(state_dict).__name__}")
        expected = {"type", "last_epoch", "base_lr", *self._hyper_names}
        if set(state_dict) != expected:
            raise ValueError(f"{where}: the state dict has keys {sorted(state_dict)}, expected "
                             f"{sorted(expected)}")
        kind = str(unwrap(state_dict["type"]))
        if kind != type(self).__name__:
            raise ValueError(f"{where}: the state dict is for {kind}, not {type(self).__name__}")
        hyper = self._checked_hyper(**{key: state_dict[key] for key in self._hyper_names})
        last_epoch = integer(where, "last_epoch", state_dict["last_epoch"], 0)
        base_lr = real(where, "base_lr", state_dict["base_lr"], 0.0)
        for key, value in hyper.items():
            setattr(self, key, value)
        self.last_epoch, self.base_lr = last_epoch, base_lr
        self._last_lr = self.lr_at(last_epoch)


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (t // step_size): multiply by gamma every step_size steps."""

    _hyper_names = ("step_size", "gamma")

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        super().__init__(optimizer, step_size=step_size, gamma=gamma)

    def _checked_hyper(self, step_size, gamma) -> dict[str, Any]:
        return {"step_size": integer("StepLR", "step_size", step_size, 1),
                "gamma": real("StepLR", "gamma", gamma, 0.0)}

    def lr_at(self, step: int) -> float:
        return self.base_lr * self.gamma ** (step // self.step_size)


class MultiStepLR(LRScheduler):
    """lr = base_lr * gamma ** (the number of milestones <= t): multiply by gamma at each
    milestone (a milestone listed twice counts twice, as in PyTorch)."""

    _hyper_names = ("milestones", "gamma")

    def __init__(self, optimizer: Optimizer, milestones, gamma: float = 0.1) -> None:
        super().__init__(optimizer, milestones=milestones, gamma=gamma)

    def _checked_hyper(self, milestones, gamma) -> dict[str, Any]:
        if isinstance(milestones, (str, bytes)) or not hasattr(milestones, "__iter__"):
            raise TypeError(f"MultiStepLR: milestones must be a list of ints, got "
                            f"{milestones!r}")
        steps = [integer("MultiStepLR", "each milestone", m, 0) for m in milestones]
        return {"milestones": np.array(sorted(steps), dtype=np.int64),
                "gamma": real("MultiStepLR", "gamma", gamma, 0.0)}

    def lr_at(self, step: int) -> float:
        passed = bisect_right(self.milestones.tolist(), step)
        return self.base_lr * self.gamma ** passed


class LinearLR(LRScheduler):
    """lr = base_lr * (start_factor + (end_factor - start_factor) * min(t, total_iters) /
    total_iters): from start_factor to end_factor of the base rate in total_iters steps, then
    constant."""

    _hyper_names = ("start_factor", "end_factor", "total_iters")

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3,
                 end_factor: float = 1.0, total_iters: int = 5) -> None:
        super().__init__(optimizer, start_factor=start_factor, end_factor=end_factor,
                         total_iters=total_iters)

    def _checked_hyper(self, start_factor, end_factor, total_iters) -> dict[str, Any]:
        return {"start_factor": real("LinearLR", "start_factor", start_factor, 0.0, 1.0,
                                      low_open=True),
                "end_factor": real("LinearLR", "end_factor", end_factor, 0.0, 1.0),
                "total_iters": integer("LinearLR", "total_iters", total_iters, 1)}

    def lr_at(self, step: int) -> float:
        progress = (self.end_factor - self.start_factor) * min(self.total_iters, step)
        return self.base_lr * (self.start_factor + progress / self.total_iters)


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2: half a cosine from
    the base rate down to eta_min in T_max steps (and back up after, as in PyTorch)."""

    _hyper_names = ("T_max", "eta_min")

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        super().__init__(optimizer, T_max=T_max, eta_min=eta_min)

    def _checked_hyper(self, T_max, eta_min) -> dict[str, Any]:
        return {"T_max": integer("CosineAnnealingLR", "T_max", T_max, 1),
                "eta_min": real("CosineAnnealingLR", "eta_min", eta_min, 0.0)}

    def lr_at(self, step: int) -> float:
        cosine = (1 + math.cos(math.pi * step / self.T_max)) / 2
        return self.eta_min + (self.base_lr - self.eta_min) * cosine


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin): warm up from max_lr / div_factor to max_lr over the
    first pct_start of total_steps, then anneal to max_lr / (div_factor * final_div_factor);
    with cycle_momentum, the momentum (SGD's momentum, Adam's beta1) moves the opposite way,
    between max_momentum and base_momentum. Anneal "cos" or "linear"; three_phase as PyTorch.

    Phase i runs from step start_i to end_i (end = pct_start * total_steps - 1 for the warm-up,
    total_steps - 1 for the last) and interpolates with pct = (t - start_i) / (end_i - start_i):
    cos: end + (start - end) * (1 + cos(pi * pct)) / 2;  linear: start + (end - start) * pct.
    Stepping past total_steps is an error, as in PyTorch.
    """

    _hyper_names = ("max_lr", "total_steps", "pct_start", "anneal_strategy", "cycle_momentum",
                    "base_momentum", "max_momentum", "div_factor", "final_div_factor",
                    "three_phase")

    def __init__(self, optimizer: Optimizer, max_lr: float, total_steps: int | None = None,
                 epochs: int | None = None, steps_per_epoch: int | None = None,
                 pct_start: float = 0.3, anneal_strategy: str = "cos",
                 cycle_momentum: bool = True, base_momentum: float = 0.85,
                 max_momentum: float = 0.95, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, three_phase: bool = False) -> None:
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError("OneCycleLR: give total_steps, or epochs and steps_per_epoch")
            total_steps = (integer("OneCycleLR", "epochs", epochs, 1)
                           * integer("OneCycleLR", "steps_per_epoch", steps_per_epoch, 1))
        super().__init__(optimizer, max_lr=max_lr, total_steps=total_steps,
                         pct_start=pct_start, anneal_strategy=anneal_strategy,
                         cycle_momentum=cycle_momentum, base_momentum=base_momentum,
                         max_momentum=max_momentum, div_factor=div_factor,
                         final_div_factor=final_div_factor, three_phase=three_phase)

    def _checked_hyper(self, max_lr, total_steps, pct_start, anneal_strategy, cycle_momentum,
                       base_momentum, max_momentum, div_factor, final_div_factor,
                       three_phase) -> dict[str, Any]:
        where = "OneCycleLR"
        hyper = {
            "max_lr": real(where, "max_lr", max_lr, 0.0, low_open=True),
            "total_steps": integer(where, "total_steps", total_steps, 1),
            "pct_start": real(where, "pct_start", pct_start, 0.0, 1.0),
            "anneal_strategy": str(unwrap(anneal_strategy)),
            "cycle_momentum": flag(where, "cycle_momentum", cycle_momentum),
            "base_momentum": real(where, "base_momentum", base_momentum, 0.0, 1.0,
                                   high_open=True),
            "max_momentum": real(where, "max_momentum", max_momentum, 0.0, 1.0,
                                  high_open=True),
            "div_factor": real(where, "div_factor", div_factor, 0.0, low_open=True),
            "final_div_factor": real(where, "final_div_factor", final_div_factor, 0.0,
                                      low_open=True),
            "three_phase": flag(where, "three_phase", three_phase),
        }
        if hyper["anneal_strategy"] not in ("cos", "linear"):
            raise ValueError(f"{where}: anneal_strategy must be 'cos' or 'linear', got "
                             f"{anneal_strategy!r}")
        if hyper["cycle_momentum"] and self._momentum_name() is None:
            raise ValueError(f"{where}: cycle_momentum needs an optimizer with momentum or "
                             f"beta1, {type(self.optimizer).__name__} has neither")
        start = 0.0
        for end, *_ in self._phases(hyper):
            if end == start:   # pct would divide by zero (PyTorch raises ZeroDivisionError)
                raise ValueError(
                    f"{where}: pct_start {hyper['pct_start']} with total_steps "
                    f"{hyper['total_steps']} gives a phase of no steps; change either")
            start = end
        return hyper

    @staticmethod
    def _phases(hyper: Mapping[str, Any]) -> list[tuple[float, float, float, float, float]]:
        """(end step, start lr, end lr, start momentum, end momentum) of each phase."""
        total, pct = hyper["total_steps"], hyper["pct_start"]
        initial = hyper["max_lr"] / hyper["div_factor"]
        peak, low = hyper["max_lr"], initial / hyper["final_div_factor"]
        m_low, m_high = hyper["base_momentum"], hyper["max_momentum"]
        if hyper["three_phase"]:
            return [(float(pct * total) - 1, initial, peak, m_high, m_low),
                    (float(2 * pct * total) - 2, peak, initial, m_low, m_high),
                    (total - 1, initial, low, m_high, m_high)]
        return [(float(pct * total) - 1, initial, peak, m_high, m_low),
                (total - 1, peak, low, m_low, m_high)]

    def _initial_lr(self) -> float:
        return self.max_lr / self.div_factor

    def _momentum_name(self) -> str | None:
        """The optimizer attribute that plays momentum: Adam's beta1 or SGD's momentum."""
        for name in ("beta1", "momentum"):
            if hasattr(self.optimizer, name):
                return name
        return None

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _at(self, step: int) -> tuple[float, float]:
        """(learning rate, momentum) at `step`."""
        phases = self._phases({key: getattr(self, key) for key in self._hyper_names})
        start = 0.0
        for i, (end, lr_start, lr_end, m_start, m_end) in enumerate(phases):
            if step <= end or i == len(phases) - 1:
                pct = (step - start) / (end - start)
                return self._anneal(lr_start, lr_end, pct), self._anneal(m_start, m_end, pct)
            start = end
        raise AssertionError("unreachable: the last phase takes every step")

    def lr_at(self, step: int) -> float:
        # NOTE: at step total_steps (after the last update, so never used) the linear anneal
        # overshoots its end: PyTorch then gives a negative rate, an optimizer refuses one
        return max(self._at(step)[0], 0.0)

    def step(self) -> None:
        if self.last_epoch + 1 > self.total_steps:
            raise ValueError(f"OneCycleLR: tried to step {self.last_epoch + 1} times, but "
                             f"total_steps is {self.total_steps}")
        super().step()

    def _apply(self) -> None:
        super()._apply()
        if self.cycle_momentum:
            setattr(self.optimizer, self._momentum_name(), self._at(self.last_epoch)[1])
