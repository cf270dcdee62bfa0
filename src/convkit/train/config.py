"""The training recipe as one flat dataclass: what `convkit train` takes as options and writes as config.yaml.

Everything that decides the result lives here, so `runs/<name>/config.yaml` reproduces a run:
`convkit train --config runs/<name>/config.yaml`. Each field is declared with `opt`, which also holds its
command-line option (help, group, choices, flags): one schema drives the config file, its validation and
the options of `convkit train` and `convkit lr-find`, so a new option is one line here.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from convkit.data.augment import AugmentConfig
from convkit.errors import ConvkitError
from convkit.utils import YAMLInputError, compose_yaml, load_yaml, shorten, yaml_value

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("onecycle", "cosine", "step", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
GROUPS = ("data", "model", "optimisation", "execution", "run folder")  # the sections of `convkit train --help`


def opt(default: Any, *, help: str, group: str, choices: Sequence | None = None,
        metavar: str | tuple[str, ...] | None = None, flags: Sequence[str] = (), positional: bool = False,
        off: str | None = None) -> Any:
    """A `TrainConfig` field together with its command-line option: one line declares both.

    The field's type decides how the option parses its value (see `convkit.cli.train_cmds`): ``bool``
    fields get ``--x/--no-x``, ``bool | str`` a flag with an optional value, dicts ``K=V,...``, tuples one
    value per element, ``int``/``float``/``str`` a value of that type; ``X | None`` accepts what X accepts.

    Args:
        default: the field's default; a dict or list is copied for every config.
        help: the option's help text (the default is appended unless the text mentions one).
        group: the section of ``--help`` it is listed in, one of `GROUPS`.
        choices: the values allowed: `TrainConfig.validate` checks them and argparse offers them.
        metavar: the name of the value in ``--help`` (default: argparse's).
        flags: the option strings (default: ``--`` and the name with dashes); more than one are aliases.
        positional: an optional positional argument instead of a flag (the model).
        off: the help of an extra ``--no-NAME`` flag that sets a dict field to ``{}`` (``--no-augment``).

    Returns:
        A `dataclasses.field` whose metadata holds the option.

    Example:
        >>> from dataclasses import dataclass, fields
        >>> @dataclass
        ... class Recipe(TrainConfig):
        ...     mixup_alpha: float = opt(0.0, group="data", help="mixup's alpha (0: off)")
        >>> [f.metadata["help"] for f in fields(Recipe) if f.name == "mixup_alpha"]
        ["mixup's alpha (0: off)"]
    """
    if group not in GROUPS:
        raise ValueError(f"group must be one of {', '.join(GROUPS)}, got {group!r}")
    metadata = {"help": help, "group": group, "choices": tuple(choices) if choices is not None else None,
                "metavar": metavar, "flags": tuple(flags), "positional": positional, "off": off}
    if isinstance(default, dict | list):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


class ConfigError(ValueError, ConvkitError):
    """A config value of the wrong type or outside its range; the message names the field, and ``field`` holds
    its name (None when no one field is at fault), so a config file's error can name the field's line.

    Example:
        >>> err = ConfigError("lr must be positive, got -1", field="lr")
        >>> err.field, str(err)
        ('lr', 'lr must be positive, got -1')
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


# The least value of each numeric field (None fields may stay None); the words say what the edge means.
_AT_LEAST = {"epochs": 1, "batch_size": 1, "eval_batch_size": 1, "log_every": 1, "limit": 1, "test_limit": 1,
             "threads": 1, "step_size": 1, "workers": 0, "early_stopping": 0, "checkpoint_every": 0,
             "weight_decay": 0, "grad_clip": 0, "warmup_epochs": 0, "head_epochs": 0, "unfreeze_every": 1}
_MEANING = {"workers": " (0: decode in the training process)", "early_stopping": " (0: off)",
            "checkpoint_every": " (0: at epoch ends only)", "grad_clip": " (0: off)", "limit": " (or null: all)",
            "test_limit": " (or null: all)", "threads": " (or null: all cores)"}
_TYPES = {"int": int, "float": (int, float), "str": str, "bool": bool, "dict": dict,
          "tuple[float, float]": (list, tuple)}


def _check_type(name: str, value, annotation: str) -> None:
    """Refuses a value whose type the field's annotation does not admit (YAML's "128" for an int, say)."""
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    options = [a.strip() for a in text.split("|")]
    if value is None and "None" in options:
        return
    if not any(o in _TYPES for o in options):
        return  # a type this check does not know (a subclass's own field): the field's users check it
    for option in options:
        kind = _TYPES.get(option)
        if kind is None:
            continue
        if isinstance(value, bool) and option != "bool":
            continue  # True is an int to Python, not to a config
        if isinstance(value, kind):
            return
    wanted = " or ".join("null" if o == "None" else "a number" if o == "float" else o for o in options)
    raise ConfigError(f"{name} must be {wanted}, got {shorten(value)} ({type(value).__name__})", name)


DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")  # the devices training and inference run on


def parse_device(text, name: str = "device"):
    """A device's text (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) as a `torch.device` (None for
    "auto"); checks the spelling only, not that this machine has the device (see `check_device`).

    Args:
        text: the device as given.
        name: what to call it in the message (``device`` in a config, ``--device`` on the command line).

    Returns:
        The `torch.device`, or None for "auto".

    Raises:
        ConfigError: not a device's name.

    Example:
        >>> parse_device("cuda:1")
        device(type='cuda', index=1)
        >>> parse_device("nosuch", "--device")
        Traceback (most recent call last):
        ...
        convkit.train.config.ConfigError: --device must be auto, cpu, cuda, cuda:N, mps or xpu, got 'nosuch'
    """
    import torch

    if text == "auto":
        return None
    wanted = f"{name} must be auto, {', '.join(DEVICE_TYPES[:2])}, cuda:N, {' or '.join(DEVICE_TYPES[2:])}"
    if not isinstance(text, str | torch.device):
        raise ConfigError(f"{wanted}, got {shorten(text)}")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise ConfigError(f"{wanted}, got {shorten(str(text))}")
    return device


def check_device(text, name: str = "device") -> str:
    """Refuses a device this machine does not have (`parse_device`, then: is there such a GPU?), before any work.

    Args:
        text: the device as given ("auto" always passes: it picks a GPU if there is one, else the CPU).
        name: what to call it in the message.

    Returns:
        ``text``; "auto" as the device it picks ("cuda" when torch finds a GPU, else "cpu", as training does).

    Raises:
        ConfigError: a misspelt device, a GPU where there is none, or a GPU index beyond those present.

    Example:
        >>> check_device("cpu"), check_device("auto") in ("cpu", "cuda")
        ('cpu', True)
    """
    import torch

    device = parse_device(text, name)
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.type == "cpu":
        return text
    backend = getattr(torch, device.type, None)
    count = backend.device_count() if backend is not None and backend.is_available() else 0
    if device.type == "mps":
        count = int(torch.backends.mps.is_available())
    if count == 0:
        raise ConfigError(f"{name} {text}: this machine has no {device.type} device (torch finds none); use cpu, "
                          "or auto to take a GPU when there is one")
    if device.index is not None and device.index >= count:
        raise ConfigError(f"{name} {text}: this machine has {count} {device.type} device{'s' * (count > 1)} "
                          f"({device.type}:0..{count - 1})")
    return text


def check_compile_backend(backend, name: str = "compile") -> None:
    """Refuses a torch.compile backend that torch does not know (True, the default backend, passes).

    Example:
        >>> check_compile_backend("nosuch")
        Traceback (most recent call last):
        ...
        convkit.train.config.ConfigError: compile: unknown backend 'nosuch'; torch.compile's backends include aot_eager, ...
    """
    if not isinstance(backend, str):
        return
    from torch._dynamo import list_backends  # imported here: only a config that names a backend pays for it

    known = list_backends(exclude_tags=())  # all, the debugging ones too
    if backend not in known:
        close = difflib.get_close_matches(backend, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        common = sorted({*list_backends(), "aot_eager", "eager"} & set(known))
        raise ConfigError(f"{name}: unknown backend {shorten(backend)}; {hint}torch.compile's backends include "
                          f"{', '.join(common)} (all: torch._dynamo.list_backends(exclude_tags=()))")


@dataclass
class TrainConfig:
    """A training run's recipe. The defaults train `fastcnn` on the shipped Fashion-MNIST subset in seconds.

    The default recipe (AdamW 6e-3 with decoupled weight decay 0.05, one-cycle with a 0.3-epoch rise, an EMA
    of the weights, horizontal flips, flip test-time augmentation, batch 128) was tuned for the most test
    accuracy per second on 2 CPU cores: on full Fashion-MNIST fastcnn passes 90% after one epoch and about
    92% after three.

    Args:
        task: what the model is trained for (`convkit.train.list_tasks()`): "classification".
        model: a zoo name (`convkit models`) or a model file (.yaml).
        model_kwargs: extra arguments of the zoo builder, e.g. {"widths": [16, 32, 64]}.
        data: a dataset name or path (see `convkit.data.load_dataset`); "default" is the shipped subset.
        data_dir: where named datasets are looked for.
        test_data: the evaluation set; None takes the test split of `data`.
        classes: the class names in label order, "cat,dog" or a file of one name a line (e.g. classes.txt):
            a CSV's labels must be among them, image folders are matched to them by name. None: the data's
            own (folder names; a CSV's labels, or the classes.txt beside it).
        limit: train on the first `limit` training images only (quick trials, tests); None for all.
        test_limit: evaluate on the first `test_limit` test images only.
        stream: read image folders and CSVs from disk batch by batch, decoded by DataLoader workers, instead of
            holding them in memory as one uint8 tensor. None: only sets whose tensor would exceed 2 GiB
            (`convkit.data.MEMORY_BUDGET`); True: always (named and IDX datasets stay in memory); False: never
            (a set too large is an error that says its size). The batches are the same either way; only the
            normalisation statistics of a streamed set are estimated from up to 1,000 of its files.
        workers: DataLoader worker processes that decode streamed images (None: min(8, CPU cores); 0: decode in
            the training process). They change the speed, never the result.
        epochs: passes over the training set.
        batch_size: the global batch (split across processes under torchrun).
        eval_batch_size: batch of the evaluation passes (None: 256 on a CPU, where it fits the caches; 2048 on a
            GPU, where each pass costs more to launch than to compute).
        optimizer: "sgd" (with momentum, optionally Nesterov), "adam" or "adamw".
        lr: the peak learning rate (one-cycle's max_lr).
        momentum, nesterov: SGD's momentum.
        betas: Adam's betas.
        weight_decay: L2 penalty (decoupled for AdamW); not applied to biases and normalisation weights.
        schedule: "onecycle", "cosine", "step" or "constant" (per step, not per epoch).
        warmup_epochs: linear warm-up before cosine, step or constant (one-cycle has its own).
        step_size, gamma: the step schedule: lr *= gamma every step_size epochs.
        label_smoothing: CrossEntropyLoss's label smoothing.
        grad_clip: clip the gradients' global norm to this (0: off).
        ema: decay of an exponential moving average of the weights, evaluated and saved instead of the raw
            weights (0: off). Typical: 0.999 for thousands of steps.
        early_stopping: stop after this many epochs without a better test accuracy (0: off).
        augment: `AugmentConfig` fields, e.g. {"horizontal_flip": True, "crop_padding": 2}.
        tta: evaluate on each image and its mirror image, averaged (None: when training uses horizontal
            flips). Saved with the checkpoint, so `evaluate` and `predict` do the same.
        precision: "auto" (bf16 on GPUs that have it, fp32 on CPU), "fp32", "bf16" or "fp16".
        channels_last: NHWC memory format (None: on; it is much faster for small CNNs on CPU too).
        compile: torch.compile the model: True for the default backend (Inductor), or a backend's name, e.g.
            "aot_eager" (no code generation: quick to start, to check that a model compiles).
        cudnn_benchmark: let cuDNN time its algorithms for each new input shape (GPU only). It costs seconds
            at the start of a run (for every layer, batch size and the last, smaller batch) and pays off only
            in long runs of big models; off by default.
        device: "auto", "cpu", "cuda", "cuda:1", ...
        threads: torch's CPU threads (None: all cores).
        seed: seeds the weights, the data order and the augmentation.
        deterministic: deterministic algorithms (None: on CPU, where they make resumes exact; off on GPU).
        checkpoint_every: also save the resumable state every this many steps (0: only at epoch ends).
        log_every: steps between progress updates (and NaN checks).
        name: the run folder's name under `runs_dir` (None: model name and time).
        runs_dir: where run folders go.
        quiet: one line per epoch instead of progress bars.

    Example:
        >>> cfg = TrainConfig(model="resnet20", data="cifar10", epochs=30, augment={"crop_padding": 4})
        >>> TrainConfig.from_yaml(cfg.to_yaml()) == cfg
        True
    """

    task: str = opt("classification", group="model",
                    help="what the model is trained for: classification, or detect (a detector; the task's own "
                    "defaults: model yolo, 12 epochs, batch 32, lr 5e-3, no EMA; see convkit.train.list_tasks())")
    model: str = opt("fastcnn", group="model", positional=True, help="zoo name or model file (.yaml)")
    model_kwargs: dict = opt({}, group="model", flags=("--model-arg",), metavar="K=V,...",
                             help="zoo builder arguments, e.g. widths=[32,64,128],dropout=0.1")
    data: str = opt("default", group="data",
                    help="dataset name or path (default: the shipped Fashion-MNIST subset)")
    data_dir: str | None = opt(None, group="data", help="where named datasets are looked for")
    test_data: str | None = opt(None, group="data", flags=("--test-data", "--val-data"),
                                help="evaluation set (default: the test split of --data, else a held-out part)")
    backbone: str | None = opt(None, group="model", help="detection: the detector's backbone, a zoo name, model "
                               "file, run or checkpoint (default: fastcnn)")
    backbone_kwargs: dict = opt({}, group="model", flags=("--backbone-arg",), metavar="K=V,...",
                                help="detection: the backbone's zoo builder arguments, e.g. widths=[16,32,64,128]")
    classes: str | None = opt(None, group="data", metavar="NAMES|FILE",
                              help="class names in label order: cat,dog or a file of one name a line "
                              "(default: folder names, or a CSV's labels or its classes.txt)")
    limit: int | None = opt(None, group="data", metavar="N", help="train on the first N images only")
    test_limit: int | None = opt(None, group="data", metavar="N", help="evaluate on the first N test images only")
    stream: bool | None = opt(None, group="data", help="decode image folders/CSVs from disk in every batch "
                              "instead of holding them in memory (default: only sets over 2 GiB as uint8); "
                              "--no-stream refuses to stream")
    workers: int | None = opt(None, group="data", help="DataLoader workers that decode streamed images "
                              "(default: min(8, cores); 0: in the training process)")
    epochs: int = opt(8, group="optimisation", help="passes over the training set")
    batch_size: int = opt(128, group="optimisation", help="the global batch (split across processes)")
    eval_batch_size: int | None = opt(None, group="optimisation",
                                      help="batch of the evaluation passes (default: 256 on CPU, 2048 on GPU)")
    optimizer: str = opt("adamw", group="optimisation", choices=OPTIMIZERS, help="the optimizer")
    lr: float = opt(6e-3, group="optimisation", help="peak learning rate")
    momentum: float = opt(0.9, group="optimisation", help="SGD's momentum")
    nesterov: bool = opt(True, group="optimisation", help="Nesterov momentum (SGD)")
    betas: tuple[float, float] = opt((0.9, 0.999), group="optimisation", metavar=("B1", "B2"), help="Adam's betas")
    weight_decay: float = opt(0.05, group="optimisation",
                              help="L2 penalty (decoupled for AdamW), not on biases and normalisation weights")
    schedule: str = opt("onecycle", group="optimisation", choices=SCHEDULES, help="learning-rate schedule, per step")
    warmup_epochs: float = opt(0.3, group="optimisation", help="linear warm-up (one-cycle: the rise)")
    step_size: int = opt(1, group="optimisation", help="epochs between steps of --schedule step")
    gamma: float = opt(0.7, group="optimisation", help="factor of --schedule step")
    label_smoothing: float = opt(0.0, group="optimisation", help="CrossEntropyLoss's label smoothing")
    grad_clip: float = opt(0.0, group="optimisation", help="clip the gradient norm (0: off)")
    ema: float = opt(0.995, group="optimisation", help="EMA decay of the weights, e.g. 0.999 (0: off)")
    early_stopping: int = opt(0, group="optimisation", metavar="PATIENCE",
                              help="stop after this many epochs without a better test accuracy (0: off)")
    augment: dict = opt({"horizontal_flip": True}, group="data", metavar="K=V,...", off="no augmentation",
                        help="augmentations, e.g. horizontal_flip=1,crop_padding=2,mixup=0.2 (see AugmentConfig)")
    tta: bool | None = opt(None, group="optimisation",
                           help="evaluate on images and their mirror images (default: when training flips them)")
    precision: str = opt("auto", group="execution", choices=PRECISIONS,
                         help="auto: bf16 on GPUs that have it, fp32 on CPU")
    channels_last: bool | None = opt(None, group="execution", help="NHWC memory format (default: on)")
    compile: bool | str = opt(False, group="execution", metavar="BACKEND",
                              help="torch.compile the model (optionally with this backend, e.g. aot_eager)")
    cudnn_benchmark: bool = opt(False, group="execution",
                                help="cuDNN autotuning: seconds at the start, faster steps for long GPU runs")
    device: str = opt("auto", group="execution", help="auto, cpu, cuda, cuda:1...")
    threads: int | None = opt(None, group="execution", help="CPU threads (default: all cores)")
    seed: int = opt(0, group="execution", help="seeds the weights, the data order and the augmentation")
    deterministic: bool | None = opt(None, group="execution",
                                     help="deterministic algorithms (default: on CPU, where resumes are exact)")
    checkpoint_every: int = opt(0, group="run folder", metavar="STEPS",
                                help="also save the resumable state every N steps (default: epoch ends only)")
    log_every: int = opt(10, group="run folder", metavar="STEPS", help="steps between progress updates")
    name: str | None = opt(None, group="run folder",
                           help="run folder name under --runs-dir (default: model-date-time)")
    runs_dir: str = opt("runs", group="run folder", help="where run folders go")
    quiet: bool = opt(False, group="run folder", flags=("--quiet", "-q"), help="one line per epoch, no progress bars")

    def __post_init__(self):
        for name in ("model", "data", "data_dir", "test_data", "runs_dir"):  # Paths: YAML stores text
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))
        for name, kind, wanted in (("betas", (list, tuple), "two numbers"), ("model_kwargs", dict, "a mapping"),
                                   ("augment", dict, "a mapping")):  # checked before they are converted
            value = getattr(self, name)
            if not (isinstance(value, kind) or (value is None and name != "betas")):
                raise ConfigError(f"{name} must be {wanted}, got {shorten(value)} ({type(value).__name__})", name)
        self.betas = tuple(self.betas)
        self.model_kwargs = dict(self.model_kwargs or {})
        self.augment = dict(self.augment or {})
        self.validate()

    def validate(self) -> None:
        """Checks every field's type, choices and range; raises ConfigError (a ValueError) naming the field, what
        it got and what it accepts."""
        for f in fields(self):
            value = getattr(self, f.name)
            _check_type(f.name, value, f.type)
            allowed = f.metadata.get("choices")  # the choices the command line offers too (see `opt`)
            if allowed is not None and value not in allowed:
                raise ConfigError(f"{f.name} must be one of {', '.join(allowed)}, got {shorten(value)}", f.name)
            low = _AT_LEAST.get(f.name)
            if low is not None and value is not None and not value >= low:  # `not >=`: NaN fails too
                raise ConfigError(f"{f.name} must be at least {low}{_MEANING.get(f.name, '')}, got {value}", f.name)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be positive, got {self.lr}", "lr")
        if not self.gamma > 0:
            raise ConfigError(f"gamma must be positive, got {self.gamma}", "gamma")
        for name in ("momentum", "label_smoothing", "ema"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must lie in [0, 1){' (0: off)' if name == 'ema' else ''}, got "
                                  f"{getattr(self, name)}", name)
        numbers = all(isinstance(b, int | float) and not isinstance(b, bool) for b in self.betas)
        if len(self.betas) != 2 or not numbers or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {shorten(list(self.betas))}", "betas")
        try:
            self.augment_config()  # unknown augmentation names and bad values fail here, before any work
        except ConvkitError:  # AugmentError names --augment's field itself
            raise
        except (TypeError, ValueError) as err:
            raise ConfigError(f"augment: {str(err)[:300]}", "augment") from None
        parse_device(self.device)  # the spelling only: a GPU run's config is still read on a machine without one
        check_compile_backend(self.compile)
        from convkit.train.task import list_tasks  # the registry: tasks register themselves by name

        if self.task not in list_tasks():
            raise ConfigError(f"task must be one of {', '.join(list_tasks())}, got {shorten(self.task)}", "task")

    def augment_config(self) -> AugmentConfig:
        """The `augment` mapping as an `AugmentConfig` (raises ValueError on an unknown name)."""
        known = {f.name for f in fields(AugmentConfig)}
        unknown = set(self.augment) - known
        if unknown:
            raise ConfigError(f"unknown augmentation {shorten(sorted(map(str, unknown))[0])}; known: "
                              f"{', '.join(sorted(known))}", "augment")
        return AugmentConfig(**self.augment)

    def to_dict(self) -> dict:
        """A plain dict (lists for tuples) that `from_dict` turns back into an equal config."""
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    def to_yaml(self, path: str | os.PathLike | None = None) -> str:
        """The config as YAML text, each key commented with its option's help; also written (atomically) to
        `path` if given.

        Example:
            >>> text = TrainConfig(epochs=10).to_yaml("my_recipe.yaml")
            >>> TrainConfig.from_yaml("my_recipe.yaml").epochs
            10
        """
        data = self.to_dict()
        plain = yaml.safe_dump(data, sort_keys=False)
        helps = {f.name: f.metadata["help"] for f in fields(self) if f.metadata.get("help")}
        lines = plain.splitlines()
        for i, line in enumerate(lines):  # a top-level key's line, unless its value goes on (a long string)
            ends = line.endswith(":") or i + 1 == len(lines) or not lines[i + 1].startswith(" ")
            if line.partition(":")[0] in helps and ends:
                lines[i] = f"{line}  # {helps[line.partition(':')[0]]}"
        commented = "\n".join(lines) + "\n"
        try:
            same = load_yaml(commented) == data
        except YAMLInputError:
            same = False
        text = "# convkit training config: `convkit train --config THIS_FILE` repeats the run\n"
        text += commented if same else plain
        if path is not None:
            from convkit.train.runfolder import atomic_write_text

            atomic_write_text(path, text)
        return text

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Builds a config from a mapping; an unknown key is an error that suggests the closest known one.

        A mapping with a ``strategy`` key is a fine-tuning recipe: `TrainConfig.from_dict` then returns a
        `FinetuneConfig`, so a run's saved config reads back as what it was, wherever it is read.

        Raises:
            ConfigError: an unknown key or an invalid value (a ValueError).
        """
        if cls is TrainConfig and isinstance(d, dict) and "strategy" in d:
            return FinetuneConfig.from_dict(d)
        names = [f.name for f in fields(cls)]
        for key in d:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                raise ConfigError(f"unknown config key {shorten(key)}" +
                                  (f"; did you mean {close[0]!r}?" if close else ""), key)
        return cls(**{**task_defaults(d.get("task"), names), **d})

    @classmethod
    def for_task(cls, task: str | None = None) -> TrainConfig:
        """The default config of a task: its own defaults (`Task.defaults`, e.g. detection's model and
        recipe) where they differ from classification's.

        Example:
            >>> TrainConfig.for_task("detect").model, TrainConfig.for_task().model
            ('yolo', 'fastcnn')
        """
        return cls.from_dict({"task": task} if task else {})

    @classmethod
    def from_yaml(cls, text_or_path: str | os.PathLike) -> TrainConfig:
        """Reads a config from YAML text or a YAML file (as written by `to_yaml`).

        Raises:
            ConfigError: invalid YAML, a tag, an unknown key or a bad value; the message names the file and the
                line (of the field at fault).

        Example:
            >>> TrainConfig.from_yaml("epochs: 3\\nlr: 0.01\\n").lr      # text; or a run's config.yaml
            0.01
            >>> TrainConfig.from_yaml("epochs: 3\\nlr: abc\\n")
            Traceback (most recent call last):
            ...
            convkit.train.config.ConfigError: config:2: lr must be a number, got 'abc' (str)
        """
        text, where = str(text_or_path), "config"
        if "\n" not in text and Path(text).is_file():
            text, where = Path(text).read_text(encoding="utf-8"), text
        try:
            root = compose_yaml(text, where)  # bounded: aliases, nesting and tags checked
            data = yaml_value(root, where)
        except YAMLInputError as err:
            raise ConfigError(str(err)) from None
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: a config is a mapping of option: value, got {type(data).__name__}")
        lines = ({yaml_value(k, where): k.start_mark.line + 1 for k, _ in root.value}
                 if isinstance(root, yaml.MappingNode) else {})
        try:
            return cls.from_dict(data)
        except ConfigError as err:
            line = lines.get(err.field) if err.field is not None else None
            raise ConfigError(f"{where}{f':{line}' if line else ''}: {err}", err.field) from None

    def replace(self, **changes) -> TrainConfig:
        """A copy with some fields changed (unknown names refused as in `from_dict`)."""
        return type(self).from_dict({**self.to_dict(), **changes})


def task_defaults(task, names: Sequence[str] = ()) -> dict:
    """The config fields a task sets by default (`convkit.train.task.Task.defaults`), of those in `names`;
    {} for classification and for a name that is not a registered task (validation names it later)."""
    if not isinstance(task, str) or task == "classification":
        return {}
    from convkit.train.task import get_task, list_tasks

    if task not in list_tasks():
        return {}
    return {k: copy.deepcopy(v) for k, v in get_task(task).defaults.items() if not names or k in names}


STRATEGIES = ("features", "head", "finetune", "gradual")
BN_MODES = ("freeze", "train")
HEAD_MODES = ("pool", "rebuild")


@dataclass
class FinetuneConfig(TrainConfig):
    """A fine-tuning run's recipe: `TrainConfig`'s fields, SOURCE in ``model``, and how to reuse it.

    ``model`` is the SOURCE: a convkit run folder or checkpoint, a torchvision/timm state dict (.safetensors,
    or .pth/.pt read with ``weights_only=True``), or a zoo name (untrained weights: training from scratch with
    the same recipe, the baseline). ``weights`` names a torchvision weight instead. ``epochs`` counts every
    phase. The strategies (`convkit.train.finetuning.plan_phases`):

    * ``features``: the backbone is frozen; its features of the training and test images are computed once
      (cached under ``features_cache``) and only the new classifier trains, on them.
    * ``head``: the backbone is frozen and only the new head trains, on images (augmentation applies).
    * ``finetune``: ``head_epochs`` epochs on the head, then ``unfreeze`` (``all``, a number of the deepest
      stages, or a stage name) trains with ``finetune_lr``, optionally discriminative (``lr_decay`` per stage
      or ``stage_lrs``).
    * ``gradual``: ``head_epochs`` on the head, then one more stage unfrozen every ``unfreeze_every`` epochs,
      down to ``unfreeze``.

    Example:
        >>> cfg = FinetuneConfig(model="runs/fastcnn-1", data="digits", strategy="finetune", epochs=6)
        >>> TrainConfig.from_dict(cfg.to_dict()) == cfg      # a saved recipe reads back as a FinetuneConfig
        True
    """

    model: str | None = opt(None, group="model", positional=True,
                            help="SOURCE: run folder, checkpoint, torchvision/timm weights file (.safetensors, "
                            ".pth), or a zoo name (untrained: the from-scratch baseline)")
    strategy: str = opt("finetune", group="model", choices=STRATEGIES,
                        help="features: a classifier on cached features; head: a new head on the frozen "
                        "body; finetune: head, then unfreeze; gradual: stages unfrozen one by one")
    weights: str | None = opt(None, group="model", metavar="NAME",
                              help="a torchvision weight as SOURCE, e.g. resnet18.IMAGENET1K_V1 (downloaded "
                              "once by torchvision, checksum checked)")
    head_epochs: int = opt(2, group="optimisation",
                           help="finetune/gradual: epochs on the new head before any stage is unfrozen")
    unfreeze: str = opt("all", group="optimisation", metavar="all|K|STAGE",
                        help="finetune/gradual: what trains after the head phase: all, the deepest K stages, "
                        "or a stage and every deeper one")
    unfreeze_every: int = opt(1, group="optimisation", help="gradual: epochs between two unfrozen stages")
    finetune_lr: float | None = opt(None, group="optimisation",
                                    help="peak learning rate once stages are unfrozen (default: lr / 10)")
    lr_decay: float = opt(1.0, group="optimisation",
                          help="after the head phase, each stage below the head gets this factor of the one "
                          "above (1: one rate)")
    stage_lrs: dict = opt({}, group="optimisation", metavar="STAGE=LR,...",
                          help="after the head phase, learning rates of named stages, e.g. layer4=1e-4")
    bn: str = opt("freeze", group="optimisation", choices=BN_MODES,
                  help="batch norm in frozen stages: freeze keeps their running statistics, train updates them")
    head_mode: str = opt("pool", group="model", choices=HEAD_MODES,
                         help="another input size: pool the last map to the size the head was built for, or "
                         "rebuild the head's first linear layer")
    features_cache: str | None = opt(None, group="run folder", metavar="DIR",
                                     help="where features strategy caches features (default: "
                                     "$CONVKIT_CACHE/features, else ~/.cache/convkit/features)")
    augment: dict = opt({}, group="data", metavar="K=V,...", off="no augmentation",
                        help="augmentations, e.g. horizontal_flip=1,crop_padding=2 (default: none; flips are "
                        "wrong for digits and text; features computes its features without any)")

    def __post_init__(self):
        if isinstance(self.unfreeze, int) and not isinstance(self.unfreeze, bool):
            self.unfreeze = str(self.unfreeze)  # YAML's `unfreeze: 2`
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        if self.finetune_lr is not None and not (math.isfinite(self.finetune_lr) and self.finetune_lr > 0):
            raise ConfigError(f"finetune_lr must be positive, got {self.finetune_lr}", "finetune_lr")
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"lr_decay must lie in (0, 1] (1: one rate), got {self.lr_decay}", "lr_decay")
        for name, value in self.stage_lrs.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"stage_lrs: {shorten(name)}={shorten(value)}: expected a positive number",
                                  "stage_lrs")
        if self.strategy in ("finetune", "gradual") and self.head_epochs >= self.epochs:
            raise ConfigError(f"head_epochs ({self.head_epochs}) must be fewer than epochs ({self.epochs}): "
                              f"{self.strategy} unfreezes stages after the head phase; use --strategy head to "
                              "train the head only", "head_epochs")
        if self.strategy == "features" and (self.augment or self.tta):
            raise ConfigError("features: the features are computed once, from the images as they are, so "
                              f"{'augment' if self.augment else 'tta'} cannot apply; drop it, or use --strategy "
                              "head (a frozen body on augmented images)", "augment" if self.augment else "tta")
        if self.model is not None and self.weights:
            raise ConfigError(f"give SOURCE ({shorten(self.model)}) or weights ({shorten(self.weights)}), not both",
                              "weights")
        unfreeze = str(self.unfreeze).strip()
        if not unfreeze or (unfreeze.lstrip("-").isdigit() and int(unfreeze) < 1):
            raise ConfigError(f"unfreeze must be all, a number of stages (at least 1) or a stage name, got "
                              f"{shorten(self.unfreeze)}", "unfreeze")


def edited_config(run_config: dict, path: str | os.PathLike) -> str | None:
    """What an edited ``config.yaml`` of a run would change on ``--resume``, as a warning; None if nothing.

    A resumed run keeps the config saved in its checkpoint (an exact resume needs it), so edits to the run
    folder's config.yaml are not used; this says which values differ (the run's value, then the file's) and
    that the run's win.

    Args:
        run_config: the config saved with the run (the checkpoint's ``meta["config"]``).
        path: the run folder's config.yaml (a missing file: None).

    Returns:
        The warning's text, or None when the file says what the run says.

    Example:
        >>> _ = TrainConfig(epochs=3, lr=0.01).to_yaml("config.yaml")
        >>> _ = Path("config.yaml").write_text(Path("config.yaml").read_text().replace("lr: 0.01", "lr: 0.1"))
        >>> print(edited_config(TrainConfig(epochs=3, lr=0.01).to_dict(), "config.yaml"))
        config.yaml differs from the run's own config: lr: 0.01 (run) vs 0.1 (file); resuming with the run's values (an exact resume needs them; quiet, log_every and workers may be given on the command line); to train with the file's, start a new run: convkit train --config config.yaml --name NEW_NAME
    """
    path = Path(path)
    if not path.is_file():
        return None
    run = TrainConfig.from_dict(run_config).to_dict()
    try:
        data = load_yaml(path.read_text(encoding="utf-8"), str(path))
    except (YAMLInputError, OSError, UnicodeDecodeError) as err:
        return f"{path} cannot be read ({str(err)[:200]}); resuming with the run's own config"
    if not isinstance(data, dict):
        return f"{path} is not a mapping of option: value; resuming with the run's own config"
    changes = [f"{shorten(key)[1:-1] if isinstance(key, str) else shorten(key)}: not a config key" for key in data
               if key not in run]
    changes += [f"{name}: {shorten(value)} (run) vs {shorten(data[name])} (file)" for name, value in run.items()
                if name in data and _differ(value, data[name])]
    if not changes:
        return None
    shown = "; ".join(changes[:20]) + (f"; and {len(changes) - 20} more" if len(changes) > 20 else "")
    return (f"{path} differs from the run's own config: {shown}; resuming with the run's values (an exact resume "
            "needs them; quiet, log_every and workers may be given on the command line); to train with the file's, "
            f"start a new run: convkit train --config {path} --name NEW_NAME")


def _differ(run_value, file_value) -> bool:
    """Whether a file's value differs from the run's (lists and tuples alike; 1 and 1.0 alike, True and 1 not)."""
    if isinstance(run_value, bool) or isinstance(file_value, bool):
        return type(run_value) is not type(file_value) or run_value != file_value
    if isinstance(run_value, (list, tuple)) and isinstance(file_value, (list, tuple)):
        return len(run_value) != len(file_value) or any(_differ(a, b) for a, b in zip(run_value, file_value))
    return run_value != file_value
