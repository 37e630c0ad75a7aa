"""Optimizers: SGD, Adam and AdamW, with the same arithmetic, step for step, as torch.optim;
learning-rate schedules in `optim.lr_scheduler` (tinygrad_conv/lr_scheduler.py).

A parameter is any object with `.data`, a floating numpy array, and `.grad`, a numpy array of the
same shape and dtype or None (in practice a `Tensor` with requires_grad=True). `step()` updates
`.data` IN PLACE, so modules that hold the array see the new values, and computes in the
parameter's own dtype: float32 parameters stay float32.

`state_dict()` is a nested dict with str keys whose leaves are numpy arrays or Python scalars, so a
flat npz writer can save it; `load_state_dict()` checks it and restores copies, and a resumed run
continues exactly where the saved one stopped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from tinygrad_conv._args import flag, integer, real, unwrap
from tinygrad_conv.tensor import Tensor

__all__ = ["Optimizer", "SGD", "Adam", "AdamW"]


class Optimizer:
    """Holds the parameters, their per-parameter state and one scratch array per parameter.

    Subclasses define `_hyper_names`, `_checked_hyper(**hyper) -> dict` (validated and
    normalised hyper-parameters),
    `_state_keys(hyper)` (the names in a parameter's state) and
    `_update(param, grad, state, tmp)` (one in-place step of one parameter).
    """

    _hyper_names: tuple[str, ...] = ("lr",)

    def __init__(self, params: Iterable[Any]) -> None:
        name = type(self).__name__
        if isinstance(params, np.ndarray) or hasattr(params, "data"):
            raise TypeError(f"{name}: params must be an iterable of parameters, "
                            f"got a single {type(params).__name__}")
        self.params: list[Any] = list(params)
        if not self.params:
            raise ValueError(f"{name}: got an empty parameter list")
        seen: dict[int, int] = {}
        for i, p in enumerate(self.params):
            data = getattr(p, "data", None)
            if not isinstance(data, np.ndarray) or not np.issubdtype(data.dtype, np.floating):
                raise TypeError(f"{name}: parameter {i} must have a floating numpy array .data, "
                                f"got {type(data).__name__} {getattr(data, 'dtype', '')}")
            if id(p) in seen:
                raise ValueError(f"{name}: parameter {i} is parameter {seen[id(p)]} given twice")
            seen[id(p)] = i
        self.state: dict[int, dict[str, Any]] = {}
        self._scratch: dict[int, np.ndarray] = {}

    @property
    def lr(self) -> float:
        """The learning rate; it may be changed between steps (`opt.lr = 0.01`)."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = real(type(self).__name__, "lr", value, 0.0)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients: set them to None, or (set_to_none=False) fill them with 0."""
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.fill(0)

    def step(self) -> None:
        """Update every parameter that has a gradient; parameters whose grad is None are skipped."""
        for i, p in enumerate(self.params):
            grad = p.grad
            if grad is None:
                continue
            param = p.data
            if grad.shape != param.shape:
                raise ValueError(f"{type(self).__name__}.step: parameter {i} has shape "
                                 f"{param.shape} but its grad has shape {grad.shape}")
            if grad.dtype != param.dtype:
                raise TypeError(f"{type(self).__name__}.step: parameter {i} is {param.dtype} "
                                f"but its grad is {grad.dtype}")
            tmp = self._scratch.get(i)
            if tmp is None or tmp.shape != param.shape or tmp.dtype != param.dtype:
                tmp = self._scratch[i] = np.empty_like(param)
            self._update(param, grad, self.state.setdefault(i, {}), tmp)
            if isinstance(p, Tensor):
                p.bump_version()  # a graph that saved the old values now refuses backward

    def hyper(self) -> dict[str, Any]:
        """The hyper-parameters by name, as Python scalars."""
        return {name: getattr(self, name) for name in self._hyper_names}

    def state_dict(self) -> dict[str, Any]:
        """{"type", "n_params", "hyper": {...}, "state": {"<index>": {...}}}, holding copies.

        Only parameters that have taken a step have an entry in "state".
        """
        return {
            "type": type(self).__name__,
            "n_params": len(self.params),
            "hyper": self.hyper(),
            "state": {
                str(i): {key: value.copy() if isinstance(value, np.ndarray) else value
                         for key, value in state.items()}
                for i, state in sorted(self.state.items()) if state
            },
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore hyper-parameters and state from `state_dict()` output (copies are kept).

        Everything is checked before anything changes: a bad dict leaves the optimizer as it was.
        """
        where = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"{where}: expected a dict, got {type(state_dict).__name__}")
        for key in ("type", "n_params", "hyper", "state"):
            if key not in state_dict:
                raise ValueError(f"{where}: missing key {key!r}")
        kind = str(unwrap(state_dict["type"]))
        if kind != type(self).__name__:
            raise ValueError(f"{where}: the state dict is for {kind}, not {type(self).__name__}")
        n_params = unwrap(state_dict["n_params"])
        if n_params != len(self.params):
            raise ValueError(f"{where}: the state dict has n_params={n_params!r}, "
                             f"this optimizer has {len(self.params)} parameters")
        saved_hyper, saved_state = state_dict["hyper"], state_dict["state"]
        for key, value in (("hyper", saved_hyper), ("state", saved_state)):
            if not isinstance(value, Mapping):
                raise TypeError(f"{where}: {key!r} must be a dict, got {type(value).__name__}")
        names = set(self.hyper())
        if set(saved_hyper) != names:
            raise ValueError(f"{where}: 'hyper' has keys {sorted(saved_hyper)}, "
                             f"expected {sorted(names)}")
        hyper = self._checked_hyper(**saved_hyper)
        state = self._checked_state(saved_state, self._state_keys(hyper), where)
        for name, value in hyper.items():
            setattr(self, name, value)
        self.state = state

    def _checked_state(self, saved: Mapping[str, Any], keys: tuple[str, ...],
                       where: str) -> dict[int, dict[str, Any]]:
        """Copies of the saved per-parameter states, each checked against its parameter."""
        state: dict[int, dict[str, Any]] = {}
        for index, entry in saved.items():
            if not (isinstance(index, str) and index.isdigit() and int(index) < len(self.params)):
                raise ValueError(f"{where}: state key {index!r} is not a parameter index "
                                 f"in 0..{len(self.params) - 1}")
            if not isinstance(entry, Mapping):
                raise TypeError(f"{where}: state[{index!r}] must be a dict, "
                                f"got {type(entry).__name__}")
            if set(entry) != set(keys):
                raise ValueError(f"{where}: state[{index!r}] has keys {sorted(entry)}, "
                                 f"expected {sorted(keys)}")
            param = self.params[int(index)].data
            restored: dict[str, Any] = {}
            for key in keys:
                value = entry[key]
                if key == "step":  # a 0-d array after an npz round trip
                    restored[key] = integer(where, f"state[{index!r}]['step']", value, 1)
                    continue
                if not isinstance(value, np.ndarray) or value.shape != param.shape:
                    raise ValueError(f"{where}: state[{index!r}][{key!r}] has shape "
                                     f"{np.shape(value)}, the parameter has {param.shape}")
                if value.dtype != param.dtype:
                    raise TypeError(f"{where}: state[{index!r}][{key!r}] is {value.dtype}, "
                                    f"the parameter is {param.dtype}")
                restored[key] = value.copy()
            state[int(index)] = restored
        return state

    def _checked_hyper(self, lr: float) -> dict[str, Any]:
        raise NotImplementedError

    def _state_keys(self, hyper: dict[str, Any]) -> tuple[str, ...]:
        raise NotImplementedError

    def _update(self, param: np.ndarray, grad: np.ndarray, state: dict[str, Any],
                tmp: np.ndarray) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, dampening, Nesterov and weight decay.

    Per step, in PyTorch's order (b is the momentum buffer, mu the momentum, tau the dampening):
        d = g + weight_decay * p
        b = d on the first step, else mu * b + (1 - tau) * d
        d = d + mu * b if nesterov else b
        p = p - lr * d
    """

    _hyper_names = ("lr", "momentum", "dampening", "weight_decay", "nesterov")

    def __init__(self, params: Iterable[Any], lr: float, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False) -> None:
        super().__init__(params)
        hyper = self._checked_hyper(lr, momentum, dampening, weight_decay, nesterov)
        for name, value in hyper.items():
            setattr(self, name, value)

    def _checked_hyper(self, lr: float, momentum: float, dampening: float,
                       weight_decay: float, nesterov: bool) -> dict[str, Any]:
        hyper = {
            "lr": real("SGD", "lr", lr, 0.0),
            "momentum": real("SGD", "momentum", momentum, 0.0),
            "dampening": real("SGD", "dampening", dampening),
            "weight_decay": real("SGD", "weight_decay", weight_decay, 0.0),
            "nesterov": flag("SGD", "nesterov", nesterov),
        }
        if hyper["nesterov"] and (hyper["momentum"] <= 0 or hyper["dampening"] != 0):
            raise ValueError(f"SGD: nesterov needs momentum > 0 and dampening == 0, got "
                             f"momentum={hyper['momentum']}, dampening={hyper['dampening']}")
        return hyper

    def _state_keys(self, hyper: dict[str, Any]) -> tuple[str, ...]:
        return ("momentum_buffer",) if hyper["momentum"] != 0 else ()

    def _update(self, param: np.ndarray, grad: np.ndarray, state: dict[str, Any],
                tmp: np.ndarray) -> None:
        d = grad
        if self.weight_decay != 0:
            d = np.multiply(param, self.weight_decay, out=tmp)
            d += grad
        if self.momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = d.copy()
            else:
                buf *= self.momentum
                if self.dampening == 0:
                    buf += d
                else:
                    # NOTE: may scale d in place (d is tmp); fine, as d is replaced by buf below
                    buf += np.multiply(d, 1 - self.dampening, out=tmp)
            if self.nesterov:
                ahead = buf * self.momentum
                ahead += d
                d = ahead
            else:
                d = buf
        np.multiply(d, self.lr, out=tmp)
        param -= tmp


class Adam(Optimizer):
    """Adam (Kingma & Ba), with L2 weight decay added to the gradient and optional AMSGrad.

    Per step t = 1, 2, ..., in PyTorch's order:
        d = g + weight_decay * p
        m = m + (1 - beta1) * (d - m)
        v = beta2 * v + (1 - beta2) * d * d;   v_max = max(v_max, v) with amsgrad (used as v)
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)
    """

    _hyper_names = ("lr", "beta1", "beta2", "eps", "weight_decay", "amsgrad")
    _decoupled_weight_decay = False  # AdamW's difference

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False) -> None:
        super().__init__(params)
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
            raise TypeError(f"{type(self).__name__}: betas must be a pair (beta1, beta2), "
                            f"got {betas!r}")
        hyper = self._checked_hyper(lr, betas[0], betas[1], eps, weight_decay, amsgrad)
        for name, value in hyper.items():
            setattr(self, name, value)

    @property
    def betas(self) -> tuple[float, float]:
        return (self.beta1, self.beta2)

    def _checked_hyper(self, lr: float, beta1: float, beta2: float, eps: float,
                       weight_decay: float, amsgrad: bool) -> dict[str, Any]:
        name = type(self).__name__  # Adam or AdamW
        return {
            "lr": real(name, "lr", lr, 0.0),
            "beta1": real(name, "betas[0]", beta1, 0.0, 1.0, high_open=True),
            "beta2": real(name, "betas[1]", beta2, 0.0, 1.0, high_open=True),
            "eps": real(name, "eps", eps, 0.0),
            "weight_decay": real(name, "weight_decay", weight_decay, 0.0),
            "amsgrad": flag(name, "amsgrad", amsgrad),
        }

    def _state_keys(self, hyper: dict[str, Any]) -> tuple[str, ...]:
        keys = ("step", "exp_avg", "exp_avg_sq")
        return keys + ("max_exp_avg_sq",) if hyper["amsgrad"] else keys

    def _update(self, param: np.ndarray, grad: np.ndarray, state: dict[str, Any],
                tmp: np.ndarray) -> None:
        if not state:
            state["step"] = 0
            state["exp_avg"] = np.zeros_like(param)
            state["exp_avg_sq"] = np.zeros_like(param)
            if self.amsgrad:
                state["max_exp_avg_sq"] = np.zeros_like(param)
        state["step"] += 1
        step, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
        beta1, beta2 = self.beta1, self.beta2

        d = grad
        if self._decoupled_weight_decay:
            # AdamW: the decay shrinks the weights directly; the moments never see it
            param *= 1 - self.lr * self.weight_decay
        elif self.weight_decay != 0:
            d = param * self.weight_decay  # a new array: p.grad itself is left as it was
            d += grad
        # m = lerp(m, d, 1 - beta1)
        np.subtract(d, m, out=tmp)
        tmp *= 1 - beta1
        m += tmp
        v *= beta2
        np.multiply(d, 1 - beta2, out=tmp)
        tmp *= d
        v += tmp
        if self.amsgrad:
            v = np.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])

        step_size = self.lr / (1 - beta1**step)
        np.sqrt(v, out=tmp)
        tmp /= (1 - beta2**step) ** 0.5
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= step_size
        param -= tmp


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), PyTorch's default of 0.01.

    Per step, first p = p * (1 - lr * weight_decay), then Adam's update with the plain
    gradient g: where Adam adds weight_decay * p to g (so the decay is rescaled by the moments,
    and weights with large gradients barely decay), AdamW shrinks every weight at the same rate.
    """

    _decoupled_weight_decay = True

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)

