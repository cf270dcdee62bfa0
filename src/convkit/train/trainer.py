"""The training engine: `Trainer(config).fit()` or `train(...)`, the same as `convkit train` does.

The engine knows nothing about classification: a `Task` (`convkit.train.task`, chosen by `config.task`)
supplies how samples are read and batches augmented, the loss, the metrics, the pictures and what a checkpoint
records; `convkit.tasks.classification` is the first. One step, in full (`Trainer._step`): the task augments
the uint8 batch on the device, the engine normalises it and runs the forward under autocast, the task's loss,
backward through the gradient scaler, optional gradient clipping, optimizer step, scheduler step, EMA update.
The dataset lives on the device as one uint8 tensor and batches come from the data package's seeded per-epoch
permutation, so a batch costs no Python per image and the position in the data order is one integer, saved with
every checkpoint. A set too large for memory (or any image folder with `stream=True`) is decoded from disk by DataLoader workers in the
same order, batch by batch, and evaluated batch by batch.

Exact resume: the resumable state (weights, optimizer, scheduler, scaler, EMA, torch/numpy/python RNG
states, the augmenter's generator, the epoch and position in its data order, running sums) is saved at
every epoch end and every `checkpoint_every` steps. SIGINT/SIGTERM finish the current step and save;
after kill -9 the last checkpoint is used. On CPU, with the same thread count, a resumed run ends with
weights bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import copy
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from convkit.data import MEMORY_BUDGET, ImageFileDataset, ImageTensorDataset, load_dataset
from convkit.data.errors import DatasetNotFoundError
from convkit.errors import ConvkitError
from convkit.models.reference import ModelCfg
from convkit.models.weights import CheckpointError, load_state, save_state, save_tensors
from convkit.train import distributed as D
from convkit.train.config import TrainConfig, check_device, edited_config
from convkit.train.lr_finder import LRFinderResult, lr_sweep
from convkit.train.runfolder import check_run_name, never_saved, new_run_dir, remove_orphans, write_metrics
from convkit.train.schedule import WeightEMA, build_optimizer, build_scheduler
from convkit.train.settings import flush_denormals, torch_settings
from convkit.train.task import Task, get_task
from convkit.utils import format_bytes

# Options that may differ when a run is resumed: they change what is printed or how fast, not what is computed.
RESUMABLE_OVERRIDES = ("quiet", "log_every", "workers")
Dataset = ImageTensorDataset | ImageFileDataset  # in memory, or streamed from image files


class NonFiniteLossError(RuntimeError, ConvkitError):
    """The loss became NaN or infinite; the message names the epoch and step and the last good checkpoint."""

    exit_code = 1  # the run failed; not a usage error


@dataclass
class TrainResult:
    """What `fit` returns.

    Attributes:
        run_dir: the run folder (None on ranks other than 0).
        history: one dict per epoch (the rows of metrics.csv).
        best: the row of the epoch with the best test accuracy.
        stopped: "completed", "early_stopping" or "interrupted" (SIGINT/SIGTERM; resume with --resume).
        model: the evaluated model (the EMA if on), in eval mode.
        signal: the signal that interrupted the run, if any.
        classes, confusion: class names and the best epoch's test confusion matrix (row = true class), for
            classification; `extra` is the best epoch's task-specific result in general.
    """

    run_dir: Path | None
    history: list[dict]
    best: dict | None
    stopped: str
    model: nn.Module
    signal: int | None = None
    classes: list[str] | None = None
    confusion: list | None = None
    extra: object = None

    @property
    def test_accuracy(self) -> float:
        """The last epoch's test accuracy (0..1)."""
        return self.history[-1].get("test_acc", float("nan")) if self.history else float("nan")


def _resolve_config(config, overrides, cls: type[TrainConfig] = TrainConfig) -> TrainConfig:
    if config is None:
        config = cls.for_task(overrides.get("task"))
    elif isinstance(config, dict):
        config = cls.from_dict(config)
    elif isinstance(config, str | os.PathLike):
        config = cls.from_yaml(config)
    elif not isinstance(config, cls):  # a plain recipe given to a fine-tuning run: its fields carry over
        config = cls.from_dict(config.to_dict())
    return config.replace(**overrides) if overrides else config


def _resume_file(path: str | os.PathLike) -> Path | None:
    """The resumable state of the run in ``path``; None for a run that stopped before its first checkpoint
    (`convkit.train.runfolder.never_saved`), which then starts again from the beginning in its folder."""
    path = Path(path)
    file = path / "resume.safetensors" if path.is_dir() else path
    if file.is_file():
        return file
    if path.is_dir() and never_saved(path):
        return None
    saved = sorted(p.name for p in path.glob("*.safetensors")) if path.is_dir() else []
    if saved and (path / "config.yaml").is_file():
        raise FileNotFoundError(f"{path}: no resume.safetensors here (only {', '.join(saved)}): the state to continue "
                                f"from was not saved; train again with `convkit train --config {path / 'config.yaml'} "
                                "--name NEW_NAME`")
    raise FileNotFoundError(f"{path}: no resume.safetensors here; is it the folder of a run that saved a "
                            "checkpoint (`convkit train` writes one at every epoch end)?")


def load_split(name: str, split: str, data_dir, stream: bool | None = None, classes: str | None = None) -> Dataset:
    """A split in memory, or streamed from its files (config.stream: None beyond the budget, True always)."""
    ds = load_dataset(name, split, data_dir, progress=False, memory_budget=0 if stream else MEMORY_BUDGET,
                      classes=classes)
    if stream is False and isinstance(ds, ImageFileDataset):
        size = len(ds) * math.prod(ds.image_shape)
        raise ValueError(f"{name}: {len(ds):,} images of {'x'.join(map(str, ds.image_shape))} take "
                         f"{format_bytes(size)} as uint8, more than the {format_bytes(MEMORY_BUDGET)} held in "
                         "memory, and stream is off: allow streaming from disk (stream: null or true, --stream), "
                         "or pass image_size to shrink the images")
    return ds


def load_test_data(config: TrainConfig, train: Dataset | None = None) -> tuple[Dataset | None, Dataset, str]:
    """The evaluation set of a run, chosen as training chooses it (used by `Trainer` and the run report).

    `config.test_data` (its test split, else all of it: a folder or CSV is one collection); else the test split
    of `config.data`; else 10% of each class of the training set, held out with the run's seed. Then
    `config.test_limit`.

    Args:
        config: the run's config.
        train: the training set, if already loaded (it is loaded only if 10% must be held out).

    Returns:
        (the training set, less the held-out part if any; None if it was neither given nor needed,
        the test set, a description such as "fashion-mnist (test split), first 1,000").

    Raises:
        DatasetNotFoundError: no such data.
    """
    def load(name, split):
        return load_split(name, split, config.data_dir, config.stream, config.classes)

    name = config.test_data or config.data
    try:
        test, what = load(name, "test"), f"{name} (test split)"
    except DatasetNotFoundError:
        if config.test_data:  # a folder or CSV that is one collection: all of it is the test set
            test, what = load(name, "train"), str(name)
        else:
            train = train if train is not None else load(name, "train")
            train, test = train.split(0.1, seed=config.seed)
            what = f"{name} (held-out 10%)"
    if config.test_limit:
        test = test.subset(range(min(config.test_limit, len(test))))
        what += f", first {len(test):,}"
    return train, test, what


def run_data(config: TrainConfig | dict, split: str = "test", **changes) -> tuple[Dataset, str]:
    """A finished run's test (or training) set, rebuilt from its config as training built it.

    The one way `convkit evaluate RUN` and `convkit report RUN` find a run's data, so both score the images the
    run itself reported on: its test_data, else the test split of its data, else the same 10% of each class
    held out with its seed; then its test_limit (`load_test_data`). Sets too large for memory are streamed.

    Args:
        config: the run's config (its config.yaml, or the copy in a checkpoint's metadata).
        split: "test", or "train" for the images it trained on (less the held-out part, then its limit).
        **changes: config fields to change first, e.g. data_dir (where named datasets are looked for now).

    Returns:
        (the dataset, a description such as "default (test split), first 100" or "photos (held-out 10%)").

    Raises:
        DatasetNotFoundError: the run's data is no longer there.
        ValueError: an invalid config.

    Example:
        >>> test, what = run_data({"data": "default", "test_limit": 100})
        >>> len(test), what
        (100, 'default (test split), first 100')
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    config = config.replace(stream=None, **changes)
    train, test, what = load_test_data(config)
    if split == "test":
        return test, what
    if train is None:
        train, what = load_split(config.data, "train", config.data_dir, config.stream), f"{config.data} (train split)"
    else:
        what = f"{config.data} (the 90% not held out)"
    if config.limit:
        train = train.subset(range(min(config.limit, len(train))))
        what += f", first {len(train):,}"
    return train, what


def _check_fit(model: nn.Module, name: str, input_shape: tuple[int, ...]) -> None:
    """Refuses a model that cannot take the data's images, before any work: one trace on the meta device
    (milliseconds) names the layer and its formula, where the first step would end in a torch traceback."""
    from convkit.inspect.trace import fit_error
    from convkit.layers.shapes import ShapeError

    err = fit_error(model, input_shape, training=True)  # as training will run it (auxiliary heads)
    if err is not None:
        made_for = getattr(getattr(model, "model_cfg", None), "input_shape", None)
        hint = (f"; it was made for {'x'.join(map(str, made_for))} inputs" if made_for
                and tuple(made_for) != tuple(input_shape) else "")
        raise ShapeError(f"{name} cannot take the data's {'x'.join(map(str, input_shape))} images{hint}: {err}") from None


class Trainer:
    """Trains a model as `convkit train` does: run folder, checkpoints, exact resume, DDP under torchrun.

    The engine: everything task-specific comes from `config.task` (see `convkit.train.task.Task`).

    Args:
        config: a `TrainConfig`, a dict of its fields, a YAML file, or None for the defaults.
        model: a model built in Python (else `config.model` is resolved: a zoo name or a model file).
        train_data, test_data: `ImageTensorDataset`s, or `ImageFileDataset`s to stream (else loaded from
            `config.data`).
        resume: a run folder (or its resume.safetensors) to continue; the config then comes from it.
        task: a `Task` instance to use instead of the one `config.task` names.
        **overrides: config fields, e.g. `epochs=10` (on resume only quiet, log_every and workers).

    Raises:
        LabelError: a label outside the class range, naming the file (before any training).
        DatasetNotFoundError, CheckpointError, ValueError: bad data, checkpoint or config (named).

    Example:
        >>> trainer = Trainer(model="fastcnn", epochs=1, limit=128, test_limit=64, quiet=True, runs_dir="runs")
        >>> result = trainer.fit()          # 128 images of the shipped Fashion-MNIST subset, one epoch
        training fastcnn (101,050 parameters) on default: 128 images 1x28x28, 10 classes; test 64; ...
        epoch 1/1  train loss ...  test acc ...
        >>> 0 <= result.test_accuracy <= 1, result.run_dir.parent
        (True, PosixPath('runs'))
        >>> # With CIFAR-10 on disk (`load_dataset("cifar10", download=True)` fetches it), a real run:
        >>> # Trainer(model="resnet20", data="cifar10", epochs=30, augment={"crop_padding": 4}).fit()
    """

    config_class = TrainConfig  # the recipe this engine reads (a fine-tuning run: FinetuneConfig)

    def __init__(self, config: TrainConfig | dict | str | None = None, *, model: nn.Module | None = None,
                 train_data: Dataset | None = None, test_data: Dataset | None = None,
                 resume: str | os.PathLike | None = None, task: Task | None = None, **overrides):
        started = time.perf_counter()
        if isinstance(model, str):  # Trainer(model="resnet20"): a name for the config, not a module
            overrides["model"], model = model, None
        if isinstance(task, str):  # Trainer(task="detect"): a name for the config (its defaults), not an instance
            overrides["task"], task = task, None
        self.run_dir: Path | None = None
        self._notes: list[str] = []  # about the run folder, shown when the run starts
        state, meta = self._config(config, resume, overrides)
        if not isinstance(self.config, self.config_class):
            raise ValueError(f"a {type(self.config).__name__} is not a {self.config_class.__name__}: a fine-tuning "
                             "run goes through convkit.finetune (or `convkit train --resume RUN`)")
        self.task = get_task(task or self.config.task)
        self._place(meta)
        self._data(train_data, test_data, model, meta)
        self._model(model)
        self._training_parts()
        self._progress(state)
        self.setup_s = time.perf_counter() - started

    # --- set-up: a few named steps ----------------------------------------------------------------------------

    def _config(self, config, resume, overrides) -> tuple[dict | None, dict | None]:
        """The run's config: given (with overrides), or the resumed run's own; returns the resume state."""
        if resume is None:
            self.config = _resolve_config(config, overrides, self.config_class)
            if self.config.name is not None:
                check_run_name(self.config.name)  # before any work: a run never writes outside runs_dir
            return None, None
        file = _resume_file(resume)
        bad = set(overrides) - set(RESUMABLE_OVERRIDES)
        if bad or config is not None:
            raise ValueError(f"a resumed run keeps its config; only {', '.join(RESUMABLE_OVERRIDES)} may "
                             f"change (got {', '.join(sorted(bad)) or 'a config'})")
        if file is None:  # stopped before its first checkpoint: nothing to continue, so start it again
            self.run_dir = Path(resume)
            self.config = TrainConfig.from_yaml(self.run_dir / "config.yaml").replace(**overrides)
            self._notes.append(f"{self.run_dir}: the run stopped before its first checkpoint; starting it from "
                               "the beginning with its config.yaml")
            return None, None
        state, meta = load_state(file)
        lacking = [k for k in ("optimizer", "scheduler", "scaler", "augmenter", "rng", "progress", "history")
                   if k not in state] + ([] if isinstance(meta.get("config"), dict) else ["config"])
        if lacking:
            raise CheckpointError(f"{file}: damaged: its training state lacks {', '.join(lacking)}")
        self.config = TrainConfig.from_dict({**meta["config"], **overrides})
        self.run_dir = file.parent
        edited = edited_config(meta["config"], file.parent / "config.yaml")  # the run's values win; say so
        if edited and os.environ.get("RANK", "0") == "0":
            print(f"convkit: warning: {edited}", file=sys.stderr, flush=True)
        return state, meta

    def _place(self, meta: dict | None) -> None:
        """Device, processes (DDP under torchrun), threads, determinism and precision."""
        cfg = self.config
        check_device(cfg.device)  # a GPU this machine lacks: one line, before any work
        self.dist, self.device = D.init_distributed(cfg.device)
        self.threads = cfg.threads or (meta or {}).get("threads")
        self.deterministic = self.device.type == "cpu" if cfg.deterministic is None else cfg.deterministic
        precision = cfg.precision
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
        self.precision = precision
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def _data(self, train_data, test_data, model: nn.Module | None, meta: dict | None) -> None:
        """The task reads both sets and checks them; the training set's statistics normalise both."""
        with torch_settings(threads=self.threads, flush_denormal=False):
            train, test = self.task.load_data(self.config, train_data, test_data, log=self._print)
            self.task.setup(train, test, model, meta)
        self.input_shape = tuple(train.image_shape)
        if meta is not None:
            self.mean, self.std = torch.tensor(meta["mean"]), torch.tensor(meta["std"])
        else:
            self.mean, self.std = train.mean.clone(), train.std.clone()
        self.train_data, self.test_data = self._to_device(train), self._to_device(test)
        self._scale = (1 / (255 * self.std)).to(self.device).view(1, -1, 1, 1)
        self._shift = (-self.mean / self.std).to(self.device).view(1, -1, 1, 1)

    def _model(self, model: nn.Module | None) -> None:
        """Builds (seeded, so a run's initial weights depend on its seed alone) or takes the model; the model then
        carries its run's configuration (task, classes, normalisation, input shape, spec) as ``model_cfg``."""
        cfg = self.config
        self._seed_everything(cfg.seed)
        args = self.task.model_args(self.train_data)
        model, self.spec, name = self.task.build_model(cfg, args, model, self.input_shape)
        model.model_cfg = ModelCfg(name, task=self.task.name, input_shape=self.input_shape,
                                   num_classes=args.get("num_classes"), classes=self.task.meta().get("classes"),
                                   mean=tuple(self.mean.tolist()), std=tuple(self.std.tolist()), spec=self.spec,
                                   source="module")
        self.model = model.to(self.device)
        if cfg.channels_last is not False:
            self.model = self.model.to(memory_format=torch.channels_last)

    def _training_parts(self) -> None:
        """Optimizer and schedule, EMA, the task's augmenter, the gradient scaler, DDP and compile."""
        cfg = self.config
        self.steps_per_epoch = math.ceil(len(self.train_data) / cfg.batch_size)
        self._build_optimizer()
        self.ema = WeightEMA(self.model, cfg.ema) if cfg.ema else None
        self.augmenter = self.task.augmenter(cfg)
        cfg.augment_config().check_image_size(*self.input_shape[-2:])  # a crop padding as large as the images
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self._wrap_model()

    def _wrap_model(self) -> None:
        """The module the step calls: the model, under DDP (which registers the trainable parameters when it
        wraps) and torch.compile when asked."""
        cfg = self.config
        self.forward_model: nn.Module = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.forward_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.task.unused_parameters)
        if cfg.compile:
            backend = cfg.compile if isinstance(cfg.compile, str) else "inductor"
            self.forward_model = torch.compile(self.forward_model, backend=backend)

    def _progress(self, state: dict | None) -> None:
        """Where the run stands: the start, or the resumed checkpoint's place."""
        self.epoch, self.position, self.step = 0, 0, 0
        self.elapsed = 0.0
        self.history: list[dict] = []
        self.best: dict | None = None
        self.best_extra = None
        self.bad_epochs = 0
        # loss * n, the task's sums (e.g. correct predictions), n: this epoch's running sums, saved with every
        # checkpoint (for classification the layout of runs saved before tasks existed, so they still resume)
        self._sums = torch.zeros(2 + len(self.task.train_fields), dtype=torch.float64, device=self.device)
        self._stop_signal: int | None = None
        # Called as fn(trainer, row) after each epoch's evaluation and checkpoint (e.g. to log or time it).
        self.on_epoch_end: list = []
        if state is not None:
            self._load_state(state)

    @property
    def classes(self) -> list[str] | None:
        """The class names of a classification run (None for tasks without classes)."""
        return self.task.meta().get("classes")

    def _settings(self):
        """The process-wide torch switches of this run, restored on leaving."""
        return torch_settings(threads=self.threads, deterministic=self.deterministic,
                              cudnn_benchmark=self.config.cudnn_benchmark)

    def _to_device(self, data: Dataset) -> Dataset:
        if isinstance(data, ImageFileDataset):  # the files stay on disk; workers decode and send batches here
            return data.to(self.device, workers=self.config.workers)
        return data.to(self.device)

    def _build_optimizer(self) -> None:
        self.optimizer = build_optimizer(self.model, self.config)
        self.scheduler = build_scheduler(self.optimizer, self.config, self.steps_per_epoch)

    @staticmethod
    def _seed_everything(seed: int) -> None:
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)

    def _print(self, text: str) -> None:
        if self.dist.is_main:
            tqdm.write(text, file=sys.stdout)
            sys.stdout.flush()

    @property
    def eval_model(self) -> nn.Module:
        """The model that is evaluated and saved: the EMA of the weights if on, else the weights."""
        return self.ema.module if self.ema is not None else self.model

    # --- one step -------------------------------------------------------------------------------------------

    def _step(self, images: torch.Tensor, targets, sweep: bool = False):
        """Trains one global batch; returns (loss, the task's sums, samples) of this rank, as tensors."""
        cfg = self.config
        x, targets = self.augmenter(images, targets)
        global_n = len(x)
        if self.dist.enabled:  # every rank augments the whole batch (same generator), then takes its slice
            x, targets = D.shard(x, self.dist), self.task.shard(targets, self.dist)
        x = x * self._scale + self._shift
        if cfg.channels_last is not False:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            outputs = self.task.forward(self.forward_model, x, targets)
        loss, stats = self.task.loss(outputs, targets)
        # DDP averages gradients over ranks; weighting by the slice's share makes that the global batch's mean
        # even when the batch does not split evenly.
        scaled = loss * (len(x) * self.dist.world_size / global_n) if self.dist.enabled else loss
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(scaled).backward()
        if cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if not sweep:
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update(self.model)
        return loss.detach(), stats, len(x)

    # --- the loop -------------------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        """Trains from where the run stands to the last epoch (or early stopping, or a signal).

        Returns:
            A `TrainResult` (history, best epoch, run folder, how it stopped).

        Raises:
            NonFiniteLossError: the loss became NaN or infinite; the last good checkpoint is kept.
        """
        cfg = self.config
        self._ensure_run_dir()
        if self.dist.is_main and self.step == 0:
            self.config = cfg = cfg.replace(name=self.run_dir.name)
            cfg.to_yaml(self.run_dir / "config.yaml")
        elif self.dist.is_main and self.history:
            write_metrics(self.run_dir / "metrics.csv", self.history)  # the checkpoint's history is the truth
        previous = self._install_signals()
        stopped = "completed"
        try:
            with self._settings():
                if self.epoch == 0 and self.position == 0:
                    self._print(self._describe())
                while self.epoch < cfg.epochs:
                    if self._run_epoch() == "interrupted":
                        stopped = "interrupted"
                        break
                    if cfg.early_stopping and self.bad_epochs >= cfg.early_stopping:
                        self._print(f"early stopping: no better {self.task.monitor} for {self.bad_epochs} epochs")
                        stopped = "early_stopping"
                        break
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self.dist.is_main and self.history:
            self._plots()
        if stopped == "interrupted":
            name = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}.get(self._stop_signal, "a signal")
            self._print(f"stopped by {name} at epoch {self.epoch + 1}, step {self.step}; state saved. "
                        f"Continue with: convkit train --resume {self.run_dir}")
        D.barrier(self.dist)
        return TrainResult(self.run_dir if self.dist.is_main else None, self.history, self.best, stopped,
                           self.eval_model.eval(), self._stop_signal, extra=self.best_extra,
                           **self.task.result_fields(self.best_extra))

    def _ensure_run_dir(self) -> Path:
        """The run folder: made (or a never-saved one taken over) for a new run; for a resumed one, cleared of the
        orphan temporary files of checkpoints killed mid-way. The notes about it are shown."""
        if self.run_dir is None:
            cfg = self.config
            name = str(new_run_dir(cfg.runs_dir, cfg.name, cfg.model, note=self._notes.append)) \
                if self.dist.is_main else None
            self.run_dir = Path(D.broadcast_text(name, self.dist))
        elif self.dist.is_main:
            removed = remove_orphans(self.run_dir)
            if removed:
                self._notes.append(f"{self.run_dir}: removed {removed} orphan temporary file{'s' * (removed > 1)} "
                                   "of writes cut short")
        for note in self._notes:
            self._print(f"note: {note}")
        self._notes.clear()
        return self.run_dir

    def _run_epoch(self) -> str:
        cfg, epoch = self.config, self.epoch
        batches = self.train_data.batches(cfg.batch_size, seed=cfg.seed, epoch=epoch, start=self.position)
        bar = tqdm(total=len(self.train_data), initial=self.position, unit="img", unit_scale=True,
                   desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, dynamic_ncols=True,
                   disable=cfg.quiet or not self.dist.is_main, mininterval=0.5)
        started, shown, pending = time.perf_counter(), self.position, []
        first_position, train_s = self.position, 0.0
        self._train_mode()
        for images, targets in batches:
            loss, stats, count = self._step(images, targets)
            pending.append(loss)
            # No tensor made from a Python number here: on a GPU that copy would wait for the queued work.
            self._sums[0] += loss.double() * count
            self._sums[1:-1] += stats.double()
            self._sums[-1] += count
            self.step += 1
            self.position = batches.position
            save_now = cfg.checkpoint_every > 0 and self.step % cfg.checkpoint_every == 0
            check_now = save_now or self.step % cfg.log_every == 0 or len(batches) == 0
            if not self.dist.enabled and self._stop_signal is not None:
                check_now = True  # one process: act on a signal at once; DDP ranks agree at check steps
            if not check_now:
                continue
            train_s += time.perf_counter() - started
            started = time.perf_counter()
            stop = self._check(pending, epoch)
            pending = []
            bar.update(self.position - shown)
            shown = self.position
            means = (self._sums / self._sums[-1]).tolist()
            shown_stats = "".join(f" {_short(name)} {_fmt(name, v)}" for name, v in zip(self.task.train_fields, means[1:-1]))
            bar.set_postfix_str(f"loss {means[0]:.4f}{shown_stats} lr {self._lr():.3g}", refresh=False)
            if stop:
                self.elapsed += train_s
                self._save_resume()
                bar.close()
                return "interrupted"
            if save_now and len(batches) > 0:
                self._save_resume()
        bar.close()
        train_s += time.perf_counter() - started
        self.elapsed += train_s
        self._end_epoch((len(self.train_data) - first_position) / max(train_s, 1e-9))
        return "done"

    def _check(self, pending: list[torch.Tensor], epoch: int) -> bool:
        """Stops on a non-finite loss (naming the step) and says whether a signal asked to stop (all ranks)."""
        finite = torch.isfinite(torch.stack(pending)) if pending else torch.ones(0, dtype=torch.bool)
        flags = torch.tensor([float(not bool(finite.all())), float(self._stop_signal is not None)],
                             device=self.device)
        flags = D.any_flag(flags, self.dist)
        if flags[0]:
            bad = (~finite).nonzero().flatten()
            step = self.step - len(pending) + 1 + (int(bad[0]) if len(bad) else 0)
            value = float(pending[int(bad[0])]) if len(bad) else float("nan")
            terms = [name for name, v in zip(self.task.train_fields, self._sums[1:-1].tolist()) if not math.isfinite(v)]
            if terms:  # a task with loss terms (detection): the term(s) that went first
                value = f"{value} (in {', '.join(terms)})"
            last = self.run_dir / "last.safetensors" if self.run_dir else None
            kept = (f"the last good checkpoint is kept: {last} (and resume.safetensors)"
                    if last is not None and last.exists() else "no checkpoint had been saved yet")
            raise NonFiniteLossError(
                f"the loss became {value} at epoch {epoch + 1}, step {step}; training stopped and {kept}. "
                f"Lower the learning rate (now {self.config.lr:g}), or clip gradients (--grad-clip 1.0), "
                "or use fp32 if the run uses fp16")
        return bool(flags[1])

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _end_epoch(self, images_per_s: float) -> None:
        cfg, task = self.config, self.task
        sums = D.all_sum(self._sums, self.dist).tolist()
        eval_started = time.perf_counter()
        metrics, extra = self.evaluate_metrics()
        self.elapsed += time.perf_counter() - eval_started
        n = max(sums[-1], 1)
        row = {"epoch": self.epoch + 1, "train_loss": sums[0] / n,
               **{name: value / n for name, value in zip(task.train_fields, sums[1:-1])},
               **metrics, "lr": self._lr(), **self._epoch_fields(), "elapsed_s": self.elapsed}
        row["epoch_s"] = self.elapsed - (self.history[-1]["elapsed_s"] if self.history else 0.0)
        row["images_per_s"] = images_per_s
        self.history.append(row)
        improved = self.best is None or row[task.monitor] > self.best[task.monitor]
        if improved:
            self.best, self.best_extra, self.bad_epochs = row, extra, 0
        else:
            self.bad_epochs += 1
        self.epoch, self.position = self.epoch + 1, 0
        self._sums.zero_()
        if self.dist.is_main:
            if improved:
                save_tensors(self.run_dir / "best.safetensors", self._saved_weights(), self._meta(row))
            self._save_resume()
            write_metrics(self.run_dir / "metrics.csv", self.history, self._fields())
        for fn in self.on_epoch_end:
            fn(self, row)
        shown = "  ".join(f"{name.replace('_', ' ')} {_fmt(name, row[name])}"
                          for name in ("train_loss", *task.train_fields, *task.eval_fields))
        self._print(f"epoch {row['epoch']}/{cfg.epochs}  {shown}{' (best)' if improved else ''}  "
                    f"{row['epoch_s']:.1f}s  {row['images_per_s']:,.0f} img/s")

    def _epoch_fields(self) -> dict:
        """Entries a recipe adds to each epoch's row (a fine-tuning run: its phase and each group's rate)."""
        return {}

    def _saved_weights(self) -> dict:
        """The weights best/last.safetensors hold: the evaluated model's."""
        return self.eval_model.state_dict()

    def _fields(self) -> tuple[str, ...]:
        """The columns of metrics.csv."""
        return ("epoch", "train_loss", *self.task.train_fields, *self.task.eval_fields, "lr", "epoch_s",
                "images_per_s", "elapsed_s")

    # --- evaluation -----------------------------------------------------------------------------------------

    def evaluate_metrics(self, dataset: Dataset | None = None) -> tuple[dict, object]:
        """Evaluates the eval model (EMA if on) on the test set or `dataset` (in memory or streamed) with the
        task's metrics: (the row's evaluation entries, the task's extra result such as a confusion matrix)."""
        data = dataset if dataset is not None else self.test_data
        batch = self.config.eval_batch_size or (2048 if self.device.type == "cuda" else 256)
        try:
            return self.task.evaluate(self.eval_model, data, self.mean, self.std, batch_size=batch,
                                      device=self.device, autocast_dtype=self.autocast_dtype,
                                      channels_last=self.config.channels_last is not False)
        finally:
            self._train_mode()

    def _train_mode(self) -> None:
        """Puts the model in training mode (a fine-tuning run then keeps its frozen batch norms in eval mode)."""
        self.model.train()

    # --- checkpoints ----------------------------------------------------------------------------------------

    def _meta(self, row: dict | None) -> dict:
        from convkit import __version__

        return {"task": self.task.name, "model": self.spec, **self.task.meta(), "mean": self.mean.tolist(),
                "std": self.std.tolist(), "input_shape": list(self.input_shape), "epoch": self.epoch,
                "step": self.step, "metrics": row or {}, "ema": bool(self.ema), "config": self.config.to_dict(),
                "threads": torch.get_num_threads(), "world_size": self.dist.world_size,
                "convkit_version": __version__}

    def state_dict(self) -> dict:
        """Everything a resumed run needs, as nested tensors and plain values (see checkpoint.save_state)."""
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        state = {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "augmenter": self.augmenter.state_dict(), "rng": rng,
            "progress": {"epoch": self.epoch, "position": self.position, "step": self.step, "elapsed": self.elapsed,
                         "sums": self._sums, "bad_epochs": self.bad_epochs, "best": self.best,
                         "best_extra": self.best_extra},
            "history": self.history,
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
            state["eval_model"] = self.ema.module.state_dict()
        return state

    def _load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.augmenter.load_state_dict(state["augmenter"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        p = state["progress"]
        self.epoch, self.position, self.step, self.elapsed = p["epoch"], p["position"], p["step"], p["elapsed"]
        self._sums = p["sums"].to(self.device)
        self.bad_epochs, self.best = p["bad_epochs"], p["best"]
        self.best_extra = p.get("best_extra", p.get("best_confusion"))  # the name before tasks existed
        self.history = list(state["history"])
        rng = state["rng"]  # last: building the model and optimizer above must not move the restored streams
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)

    def _save_resume(self) -> None:
        """Writes last.safetensors (weights) and resume.safetensors (everything), rank 0 only."""
        if not self.dist.is_main:
            return
        row = self.history[-1] if self.history else None
        save_tensors(self.run_dir / "last.safetensors", self._saved_weights(), self._meta(row))
        save_state(self.run_dir / "resume.safetensors", self.state_dict(), self._meta(row))

    def _plots(self) -> None:
        title = f"{Path(self.config.model).stem} on {Path(str(self.config.data)).name}"
        self.task.plots(self.run_dir, self.history, self.best, self.best_extra, title)

    # --- signals --------------------------------------------------------------------------------------------

    def _install_signals(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum, frame):
            if self._stop_signal is not None:  # a second signal: stop now (files are written atomically)
                raise KeyboardInterrupt
            self._stop_signal = signum
            if self.dist.is_main:
                print(f"\nconvkit: {signal.Signals(signum).name}: finishing this step and saving "
                      "(send it again to stop at once)", file=sys.stderr, flush=True)

        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
        return previous

    # --- the learning-rate finder ---------------------------------------------------------------------------

    def find_lr(self, start: float = 1e-6, end: float = 10.0, steps: int = 100,
                plot: str | os.PathLike | None = None) -> LRFinderResult:
        """Sweeps the learning rate over `steps` batches, then puts the model and optimizer back as they were.

        Args:
            start, end: the range of rates (log-spaced).
            steps: batches in the sweep (fewer if the loss explodes first).
            plot: where to write the loss curve (PNG), or None.

        Returns:
            An `LRFinderResult` with `suggestion` (call `set_lr` to train with it).

        Example:
            >>> trainer = Trainer(model="fastcnn", epochs=1, limit=128, test_limit=64, batch_size=16, quiet=True,
            ...                   runs_dir="runs")
            >>> result = trainer.find_lr(start=1e-4, end=1.0, steps=10, plot="lr_find.png")   # 10 batches
            >>> len(result.lrs) <= 10, Path("lr_find.png").exists()   # the sweep stops once the loss explodes
            (True, True)
            >>> trainer.set_lr(result.suggestion or 1e-3)   # the suggestion is None when the loss never fell
            >>> trainer.config.lr == (result.suggestion or 1e-3)    # trainer.fit() now trains at this rate
            True
        """
        saved = (copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.optimizer.state_dict()),
                 self.augmenter.state_dict(), torch.get_rng_state())

        def batches():
            epoch = 10**6  # an order of its own, not one the run will train on
            while True:
                yield from self.train_data.batches(self.config.batch_size, seed=self.config.seed, epoch=epoch)
                epoch += 1

        data = batches()
        self._train_mode()

        def step(lr: float) -> float:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            images, targets = next(data)
            return float(self._step(images, targets, sweep=True)[0])

        try:
            with self._settings():
                result = lr_sweep(step, start, end, steps)
        finally:
            self.model.load_state_dict(saved[0])
            self.optimizer.load_state_dict(saved[1])
            self.augmenter.load_state_dict(saved[2])
            torch.set_rng_state(saved[3])
        if plot is not None and self.dist.is_main:
            result.plot(plot)
        return result

    def set_lr(self, lr: float) -> None:
        """Sets the peak learning rate before training (rebuilds the optimizer and schedule)."""
        if self.step:
            raise RuntimeError("set_lr is for before training; this run has already taken steps")
        self.config = self.config.replace(lr=float(lr))
        self._build_optimizer()

    def _describe(self) -> str:
        from convkit.models import count_parameters

        cfg = self.config
        params = count_parameters(self.model)
        streamed = (f" (streamed from disk, {self.train_data.workers} workers)"
                    if isinstance(self.train_data, ImageFileDataset) else "")
        return (f"training {cfg.model} ({params:,} parameters) on {cfg.data}{streamed}: {len(self.train_data):,} "
                f"images {'x'.join(map(str, self.input_shape))}, {self.task.describe()}; "
                f"test {len(self.test_data):,}; "
                f"{cfg.epochs} epochs of batch {cfg.batch_size}, {cfg.optimizer} lr {cfg.lr:g} {cfg.schedule}; "
                f"{self.device}{f' x{self.dist.world_size}' if self.dist.enabled else ''}, {self.precision}, "
                f"{torch.get_num_threads()} threads; run folder {self.run_dir}")


def train(config: TrainConfig | dict | str | None = None, *, model: nn.Module | str | None = None,
          train_data: Dataset | None = None, test_data: Dataset | None = None,
          resume: str | os.PathLike | None = None, find_lr: bool = False, **overrides) -> TrainResult:
    """Trains a model as `convkit train` does, from Python: run folder, checkpoints, plots, metrics.

    Args:
        config: a `TrainConfig`, a dict, a YAML file, or None (the defaults: fastcnn on the shipped data).
        model: a zoo name or model file (sets config.model), or an `nn.Module` built in Python.
        train_data, test_data: datasets to use instead of `config.data`.
        resume: a run folder to continue.
        find_lr: run the learning-rate finder first and train with its suggestion.
        **overrides: config fields, e.g. epochs=10, lr=0.05.

    Returns:
        A `TrainResult`: `.test_accuracy`, `.history`, `.run_dir`, `.model`.

    Raises:
        LabelError: labels outside the class range (the file named), before training.
        NonFiniteLossError: the loss became NaN or infinite (the last good checkpoint is kept).

    Example:
        >>> result = convkit.train(epochs=1, limit=128, test_limit=64, quiet=True, runs_dir="runs")   # fastcnn
        training fastcnn (101,050 parameters) on default: 128 images 1x28x28, 10 classes; test 64; ...
        epoch 1/1  train loss ...  test acc ...
        >>> len(result.history), 0 <= result.test_accuracy <= 1
        (1, True)
        >>> result = convkit.train(resume=result.run_dir)      # continue an interrupted run (this one is done)
        >>> result.stopped
        'completed'
        >>> # With CIFAR-10 on disk (`load_dataset("cifar10", download=True)` fetches it), a real run:
        >>> # convkit.train(model="resnet20", data="cifar10", epochs=30, augment={"crop_padding": 4})
    """
    from convkit.train.finetuning import resolve_trainer

    cls = resolve_trainer(_resolve_config(config, {}) if resume is None else None, resume)
    if cls is not Trainer:  # a fine-tuning recipe, or the resume of a fine-tuning run
        trainer = cls(config, train_data=train_data, test_data=test_data, resume=resume, **overrides)
    else:
        trainer = Trainer(config, model=model, train_data=train_data, test_data=test_data, resume=resume,
                          **overrides)
    if find_lr and trainer.step == 0:
        trainer._ensure_run_dir()
        result = trainer.find_lr(plot=trainer.run_dir / "lr_find.png")
        if result.suggestion:
            trainer._print(f"learning-rate finder: suggests {result.suggestion:.3g} "
                           f"(plot: {trainer.run_dir / 'lr_find.png'})")
            trainer.set_lr(result.suggestion)
    return trainer.fit()


def _short(name: str) -> str:
    """A progress-bar label: "train_acc" -> "acc"."""
    return name.split("_", 1)[-1]


def _fmt(name: str, value: float) -> str:
    """Accuracies and other fractions as percentages, losses as plain numbers."""
    return f"{value:.4f}" if "loss" in name else f"{100 * value:.2f}%"


__all__ = ["NonFiniteLossError", "TrainResult", "Trainer", "load_split", "load_test_data", "run_data", "train",
           "CheckpointError", "flush_denormals"]
