"""What a task supplies to the training engine, and the registry of tasks.

The engine (`convkit.train.Trainer`) owns the loop: device, precision, channels_last, compile, DDP, progress,
schedules, EMA, gradient clipping, the NaN stop, signals, checkpoints with bit-exact resume and the run
folder. It knows nothing about classes, boxes or masks. A task (a `Task` subclass, registered by name)
supplies what differs:

========================  ==================================================================================
``load_data``             how samples are read: the training and evaluation sets (default: image datasets
                          in memory or streamed, with the run's held-out split; see `load_test_data`)
``setup``                 what the data says about the model: e.g. the class names, checked labels
``model_args``            the builder's arguments that depend on the data (``num_classes``, ``in_channels``)
``augmenter``             how a batch is augmented: ``augmenter(images, targets) -> (x, targets)``, seeded,
                          with ``state_dict``/``load_state_dict`` for exact resume
``build_model``           the model from ``config.model`` (default: a zoo name, file or run, checked to fit)
``forward``               the training forward pass (default ``model(x)``; a detector takes the targets too)
``loss``                  ``loss(outputs, targets) -> (loss, stats)``: the mean loss and per-batch sums
                          (e.g. correct predictions) that make the ``train_fields`` of an epoch's row
``evaluate``              the metrics of the evaluation set: ``(row entries, extra)``; ``monitor`` names the
                          entry that picks the best checkpoint
``predict``, ``evaluate_model``  what ``convkit predict`` / ``convkit evaluate`` return for a trained model
``plots``                 the pictures of a run (curves, confusion matrix...)
``result_fields``         what `fit`'s `TrainResult` reports besides the history (class names, confusion)
``meta``                  what a checkpoint records for inference (class names...)
========================  ==================================================================================

Classification (`convkit.tasks.classification`) is the first task; detection and segmentation plug in
the same way, with no change to the loop.

>>> get_task("classification").name
'classification'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["Task", "TaskAugmenter", "check_model_names", "get_task", "given_or_loaded", "list_tasks", "register_task"]

_TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: makes a `Task` subclass available by its ``name`` (to configs and the CLI)."""
    _TASKS[cls.name] = cls
    return cls


def _load_builtin() -> None:
    importlib.import_module("convkit.tasks")  # registers classification (and the tasks that follow)


def list_tasks() -> list[str]:
    """The registered task names.

    >>> "classification" in list_tasks()
    True
    """
    _load_builtin()
    return sorted(_TASKS)


def get_task(name: str | Task) -> Task:
    """A new instance of the task registered as `name` (a `Task` instance is returned as is).

    Raises:
        ValueError: no task of that name; the message lists the known ones.
    """
    if isinstance(name, Task):
        return name
    _load_builtin()
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]()


def check_model_names(config, kinds, noun: str) -> None:
    """Refuses, before any data is read, a ``config.model`` that is neither one of a task's `kinds` (e.g. the
    detectors) nor a backbone (a zoo name, model file, run folder or checkpoint), and a ``config.backbone`` that is
    not a backbone; `noun` names the kinds in the message ("detector").

    Raises:
        ModelArgumentError: naming the option (--model, --backbone), the value and what it may be.

    Example:
        >>> from types import SimpleNamespace
        >>> check_model_names(SimpleNamespace(model="unett", backbone=None), {"unet": ""}, "segmenter")
        Traceback (most recent call last):
        ...
        convkit.models._registry.ModelArgumentError: --model unett: not a segmenter (unet) nor a backbone (a zoo ...
    """
    import os

    from convkit.models import list_models
    from convkit.models._registry import ModelArgumentError

    for option, name in (("--model", config.model), ("--backbone", config.backbone)):
        if name is None or name in list_models() or os.path.exists(str(name)) or (option == "--model" and name in kinds):
            continue
        kind = f"a {noun} ({', '.join(kinds)}) nor " if option == "--model" else ""
        raise ModelArgumentError(f"{option} {name}: not {kind}a backbone (a zoo name, model file, run folder or "
                                 "checkpoint; see convkit models)")


def given_or_loaded(config, train_data, test_data, load: Callable, kind: type, task: str,
                    log: Callable[[str], None] = print) -> tuple[Any, Any, str]:
    """(training set, validation set, a description of the validation set) of a task with its own dataset type:
    the sets given in Python where given, else what ``load(config, log)`` reads; each checked to be a `kind`,
    then cut to ``config.limit`` and ``config.test_limit`` (the detection and segmentation tasks' `load_data`).

    Raises:
        DataFormatError: a set that is not a `kind` (naming the task, the set and its type).
    """
    from convkit.data.errors import DataFormatError

    if train_data is None or test_data is None:
        train, test, note = load(config, log)
        train = train_data if train_data is not None else train
        test = test_data if test_data is not None else test
    else:
        train, test, note = train_data, test_data, test_data.source
    for name, ds in (("training", train), ("validation", test)):
        if not isinstance(ds, kind):
            raise DataFormatError(f"the {task} task takes {kind.__name__}s; the {name} set is a {type(ds).__name__}")
    if config.limit:
        train = train.subset(range(min(config.limit, len(train))))
    if config.test_limit:
        test = test.subset(range(min(config.test_limit, len(test))))
    return train, test, note


class TaskAugmenter:
    """A task's augmenter in the engine's form: subclasses define ``__call__(images, targets) -> (x, targets)``;
    the wrapped `convkit.data.Augmenter`'s generator state is what a checkpoint saves."""

    def __init__(self, augmenter):
        self.augmenter = augmenter

    def state_dict(self) -> dict:
        return self.augmenter.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.augmenter.load_state_dict(state)


class Task:
    """The base of every task: what the training engine asks of it (see the module docstring).

    Subclasses set ``name``, ``monitor`` (the evaluation entry that picks the best checkpoint, higher is better),
    ``train_fields`` and ``eval_fields`` (the columns of metrics.csv) and implement the methods that raise
    NotImplementedError here.
    """

    name: str = "task"
    defaults: dict = {}  # TrainConfig fields whose default differs for this task (e.g. the model)
    unused_parameters: bool = False  # its models may hold parameters a step does not use (DDP must look for them)
    monitor: str = "test_loss"
    train_fields: tuple[str, ...] = ()
    eval_fields: tuple[str, ...] = ("test_loss",)

    # --- data ------------------------------------------------------------------------------------------------

    def load_data(self, config, train_data=None, test_data=None, log: Callable[[str], None] = print):
        """(training set, evaluation set): given ones, else `config.data` with the run's held-out split.

        The default reads image datasets (`convkit.data.load_dataset`): in memory, or streamed from their files
        (config.stream), then applies config.limit and config.test_limit.
        """
        from convkit.train.trainer import load_split, load_test_data

        train = train_data if train_data is not None else load_split(config.data, "train", config.data_dir,
                                                                     config.stream, config.classes)
        if test_data is not None:
            test = test_data
            if config.test_limit:
                test = test.subset(range(min(config.test_limit, len(test))))
        else:
            train, test, what = load_test_data(config, train)
            if "(held-out 10%)" in what:
                log(f"{config.data}: no test split; holding out 10% of each class for testing")
        if config.limit:
            train = train.subset(range(min(config.limit, len(train))))
        if tuple(test.image_shape) != tuple(train.image_shape):
            raise ValueError(f"test images are {tuple(test.image_shape)}, training images "
                             f"{tuple(train.image_shape)} (C, H, W); give both the same size")
        return train, test

    def setup(self, train, test, model: nn.Module | None, meta: dict | None) -> None:
        """Reads what the data says (and checks it against a given model) before the model is built."""

    def model_args(self, train) -> dict:
        """Builder arguments that follow from the data, e.g. {"num_classes": 10, "in_channels": 1}."""
        return {"in_channels": int(train.image_shape[0])}

    def describe(self) -> str:
        """A few words on the data for the run's first line, e.g. "10 classes"."""
        return ""

    def build_model(self, config, args: dict, model: nn.Module | None, input_shape: tuple[int, ...]
                    ) -> tuple[nn.Module, dict, str]:
        """(the model, the spec that rebuilds it for a checkpoint, its name): `model` when given (built in Python),
        else `config.model` resolved (a zoo name, model file, run or checkpoint) with `args` and
        `config.model_kwargs`, and checked to take the data's images (one trace on the meta device)."""
        from convkit.models.reference import model_spec, resolve_model
        from convkit.train.trainer import _check_fit

        if model is not None:  # a module given in Python is run as it is: its forward is its own
            return (model, model_spec(model, args.get("num_classes"), args.get("in_channels")),
                    getattr(model, "model_name", None) or type(model).__name__)
        model = resolve_model(config.model, **args, **config.model_kwargs)
        _check_fit(model, model.model_cfg.name, input_shape)
        return model, model.model_cfg.spec, model.model_cfg.name

    # --- training --------------------------------------------------------------------------------------------

    def augmenter(self, config):
        """The batch augmenter: ``augmenter(images, targets) -> (float images 0..255, tuple of targets)``."""
        raise NotImplementedError

    def forward(self, model: nn.Module, x: torch.Tensor, targets):
        """The training forward pass on a normalised batch (default ``model(x)``; a detector also takes the
        targets and returns its loss terms)."""
        return model(x)

    def shard(self, targets, dist):
        """This process's slice of the batch's targets under DDP (default: each tensor of the tuple sliced)."""
        from convkit.train import distributed as D

        return tuple(D.shard(t, dist) for t in targets)

    def loss(self, outputs: torch.Tensor, targets: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean loss of the batch, 1-D tensor of sums for ``train_fields``, e.g. [correct predictions])."""
        raise NotImplementedError

    # --- evaluation, inference, pictures ---------------------------------------------------------------------

    def evaluate(self, model: nn.Module, data, mean: torch.Tensor, std: torch.Tensor, **options
                 ) -> tuple[dict, Any]:
        """(row entries named as ``eval_fields``, an extra JSON-able result kept for the best epoch)."""
        raise NotImplementedError

    def meta(self) -> dict:
        """What a checkpoint records for inference besides the engine's fields (e.g. the class names)."""
        return {}

    def plots(self, run_dir: Path, history: list[dict], best: dict | None, extra: Any, title: str) -> None:
        """Writes the run's pictures into `run_dir`."""

    def result_fields(self, extra: Any) -> dict:
        """`TrainResult` fields this task fills from the best epoch's extra result (e.g. classes, confusion)."""
        return {}

    def evaluate_model(self, model: nn.Module, data, **options):
        """`convkit evaluate`: the evaluation of a trained model (resolved by `convkit.models.resolve_model`)."""
        raise NotImplementedError

    def predict(self, model: nn.Module, inputs, **options):
        """`convkit predict`: the predictions of a trained model for image files."""
        raise NotImplementedError
