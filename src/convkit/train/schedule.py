"""Optimizer, learning-rate schedule and weight averaging, from torch's own pieces.

Schedules step once per batch (not per epoch), so a resumed run continues mid-epoch at the right rate.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.optim import lr_scheduler

from convkit.train.config import TrainConfig


def build_optimizer(model: nn.Module, config: TrainConfig, groups: list[dict] | None = None) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Adam or AdamW over the model's trainable parameters.

    Weight decay skips biases and normalisation weights (every parameter with fewer than 2 dimensions):
    decaying them only fights the normalisation and costs accuracy.

    Args:
        model: the model (parameters with ``requires_grad=False`` are left out).
        config: optimizer, lr, momentum, nesterov, betas, weight_decay.
        groups: named groups with rates of their own (`convkit.reuse.param_groups`: ``{"name", "params",
            "lr"}``) instead of one group at ``config.lr``; each is split the same way, keeping its name.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8))
        >>> opt = build_optimizer(model, TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=0.05))
        >>> type(opt).__name__, [g["weight_decay"] for g in opt.param_groups]
        ('AdamW', [0.05, 0.0])
        >>> [len(g["params"]) for g in opt.param_groups]   # conv weight | conv bias, BN weight and bias
        [1, 3]
    """
    if groups is None:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": config.lr}]
    params = [p for g in groups for p in g["params"]]
    split = []
    for group in groups:
        named = {"name": group["name"]} if "name" in group else {}
        split += [{**named, "params": [p for p in group["params"] if p.ndim >= 2], "lr": group["lr"],
                   "weight_decay": config.weight_decay},
                  {**named, "params": [p for p in group["params"] if p.ndim < 2], "lr": group["lr"],
                   "weight_decay": 0.0}]
    groups = [g for g in split if g["params"]]
    # On a GPU the fused kernels update every tensor in a few launches; the default there (foreach) took half
    # of a small CNN's GPU time per step on an H100.
    fused = bool(params) and all(p.is_cuda for p in params)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                               nesterov=config.nesterov and config.momentum > 0, fused=fused or None)
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=config.lr, betas=tuple(config.betas), fused=fused or None)


def _constant(_step: int) -> float:
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                    steps_per_epoch: int, epochs: int | None = None) -> lr_scheduler.LRScheduler:
    """The per-step schedule: one-cycle, or cosine/step/constant after an optional linear warm-up.

    Each parameter group peaks at its own rate (the ``lr`` it was built with), one-cycle included.

    Args:
        optimizer: from `build_optimizer`.
        config: schedule, epochs, warmup_epochs, step_size, gamma.
        steps_per_epoch: optimizer steps in one epoch.
        epochs: the epochs this schedule spans (default: config.epochs; a fine-tuning phase spans its own).

    Example:
        >>> config = TrainConfig(optimizer="sgd", lr=0.1, schedule="cosine", warmup_epochs=1, epochs=3)
        >>> opt = build_optimizer(nn.Linear(2, 1), config)
        >>> sched = build_scheduler(opt, config, steps_per_epoch=10)
        >>> lrs = []
        >>> for _ in range(30):            # 3 epochs of 10 steps
        ...     lrs.append(opt.param_groups[0]["lr"])
        ...     opt.step()
        ...     sched.step()
        >>> [round(lr, 4) for lr in lrs[::5]]   # every 5th step: a linear rise for an epoch, then cosine decay
        [0.001, 0.0505, 0.1, 0.0854, 0.05, 0.0146]
    """
    total = max(1, (config.epochs if epochs is None else epochs) * steps_per_epoch)
    warmup = min(total - 1, round(config.warmup_epochs * steps_per_epoch))
    if config.schedule == "onecycle":
        if total < 4:  # too few steps for a cycle (torch's phases would be empty): a constant rate
            return lr_scheduler.LambdaLR(optimizer, _constant)
        # One-cycle's rise is its warm-up: warmup_epochs sets it, else torch's default 30% of the run;
        # both phases keep at least two steps.
        rise = warmup if warmup > 0 else round(0.3 * total)
        pct = min(max(rise, 2), total - 2) / total
        peaks = [group["lr"] for group in optimizer.param_groups]
        return lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=total, pct_start=pct,
                                       cycle_momentum=config.optimizer == "sgd" and config.momentum > 0,
                                       base_momentum=0.85 * config.momentum, max_momentum=config.momentum)
    if config.schedule == "cosine":
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warmup)
    elif config.schedule == "step":
        main = lr_scheduler.StepLR(optimizer, step_size=max(1, config.step_size * steps_per_epoch),
                                   gamma=config.gamma)
    else:
        main = lr_scheduler.LambdaLR(optimizer, _constant)
    if warmup <= 0:
        return main
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=0.01, end_factor=1.0, total_iters=warmup)
    return lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


class WeightEMA:
    """An exponential moving average of a model's weights (and float buffers), whose decay grows to `decay`.

    The decay at update n is min(decay, (1 + n) / (10 + n)): a fixed 0.999 would keep the random
    initialisation in the average for thousands of steps, longer than a short run lasts. The first update
    copies the weights. Unlike `torch.optim.swa_utils.AveragedModel`, the update count is a Python int, so an
    update never waits for the GPU (AveragedModel reads its count from the device twice a step).

    Args:
        model: the model being trained (copied; the copy is `.module`).
        decay: the final decay, in [0, 1).

    Example:
        >>> model = nn.Linear(1, 1, bias=False)
        >>> ema = WeightEMA(model, 0.999)
        >>> with torch.no_grad():
        ...     for value in (1.0, 2.0, 3.0):
        ...         model.weight[:] = value        # stands for an optimizer step
        ...         ema.update(model)              # after each optimizer step
        >>> ema.updates, round(ema.module.weight.item(), 4)   # decay 0, 2/11, 3/12: far from 0.999 yet
        (3, 2.7045)
        >>> ema.module.eval()(torch.ones(1, 1))    # evaluate the averaged weights
        tensor([[2.7045]])
    """

    def __init__(self, model: nn.Module, decay: float):
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.decay = float(decay)
        self.updates = 0
        self._paired: tuple[nn.Module, tuple[list[torch.Tensor], ...]] | None = None

    def _tensors(self, model: nn.Module) -> tuple[list[torch.Tensor], ...]:
        """(averaged floats, current floats, averaged integers, current integers), paired once per model:
        training and loading change these tensors in place, so the pairing holds for every later step."""
        if self._paired is None or self._paired[0] is not model:
            pairs = list(zip(self.module.state_dict(keep_vars=True).values(),
                             model.state_dict(keep_vars=True).values()))
            floats = [(a.detach(), c.detach()) for a, c in pairs if a.is_floating_point()]
            others = [(a, c) for a, c in pairs if not a.is_floating_point()]
            self._paired = model, ([a for a, _ in floats], [c for _, c in floats],
                                   [a for a, _ in others], [c for _, c in others])
        return self._paired[1]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        averaged, current, averaged_counts, current_counts = self._tensors(model)
        if averaged_counts:  # BatchNorm's batch counts are copied
            torch._foreach_copy_(averaged_counts, current_counts)
        if averaged:
            n = self.updates
            weight = 1.0 if n == 0 else 1 - min(self.decay, (1 + n) / (10 + n))
            torch._foreach_lerp_(averaged, current, weight)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
