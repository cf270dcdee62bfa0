"""The training recipe as one flat dataclass: what `convkit train` takes as options and writes as config.yaml.

Everything that decides the result lives here, so `runs/<name>/config.yaml` reproduces a run:
`convkit train --config runs/<name>/config.yaml`.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from convkit.data.augment import AugmentConfig

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("onecycle", "cosine", "step", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


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

    task: str = "classification"
    model: str = "fastcnn"
    model_kwargs: dict = field(default_factory=dict)
    data: str = "default"
    data_dir: str | None = None
    test_data: str | None = None
    limit: int | None = None
    test_limit: int | None = None
    stream: bool | None = None
    workers: int | None = None
    epochs: int = 8
    batch_size: int = 128
    eval_batch_size: int | None = None
    optimizer: str = "adamw"
    lr: float = 6e-3
    momentum: float = 0.9
    nesterov: bool = True
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.05
    schedule: str = "onecycle"
    warmup_epochs: float = 0.3
    step_size: int = 1
    gamma: float = 0.7
    label_smoothing: float = 0.0
    grad_clip: float = 0.0
    ema: float = 0.995
    early_stopping: int = 0
    augment: dict = field(default_factory=lambda: {"horizontal_flip": True})
    tta: bool | None = None
    precision: str = "auto"
    channels_last: bool | None = None
    compile: bool | str = False
    cudnn_benchmark: bool = False
    device: str = "auto"
    threads: int | None = None
    seed: int = 0
    deterministic: bool | None = None
    checkpoint_every: int = 0
    log_every: int = 10
    name: str | None = None
    runs_dir: str = "runs"
    quiet: bool = False

    def __post_init__(self):
        for name in ("model", "data", "data_dir", "test_data", "runs_dir"):  # Paths: YAML stores text
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))
        self.betas = tuple(self.betas)
        self.model_kwargs = dict(self.model_kwargs or {})
        self.augment = dict(self.augment or {})
        self.validate()

    def validate(self) -> None:
        """Checks the choices and ranges; raises ValueError naming the field and what it accepts."""
        for name, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("precision", PRECISIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name in ("epochs", "batch_size", "eval_batch_size", "log_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers must be 0 (decode in the training process) or more, got {self.workers}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema is a decay in [0, 1) (0: off), got {self.ema}")
        self.augment_config()  # unknown augmentation names fail here, before any work

    def augment_config(self) -> AugmentConfig:
        """The `augment` mapping as an `AugmentConfig` (raises ValueError on an unknown name)."""
        known = {f.name for f in fields(AugmentConfig)}
        unknown = set(self.augment) - known
        if unknown:
            raise ValueError(f"unknown augmentation {sorted(unknown)[0]!r}; known: {', '.join(sorted(known))}")
        return AugmentConfig(**self.augment)

    def to_dict(self) -> dict:
        """A plain dict (lists for tuples) that `from_dict` turns back into an equal config."""
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    def to_yaml(self, path: str | os.PathLike | None = None) -> str:
        """The config as YAML text; also written (atomically) to `path` if given.

        Example:
            >>> TrainConfig(epochs=10).to_yaml("my_recipe.yaml")
        """
        text = "# convkit training config: `convkit train --config THIS_FILE` repeats the run\n"
        text += yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            from convkit.train.runfolder import atomic_write_text

            atomic_write_text(path, text)
        return text

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Builds a config from a mapping; an unknown key is an error that suggests the closest known one.

        Raises:
            ValueError: an unknown key or an invalid value.
        """
        names = [f.name for f in fields(cls)]
        for key in d:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                raise ValueError(f"unknown config key {key!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
        return cls(**d)

    @classmethod
    def from_yaml(cls, text_or_path: str | os.PathLike) -> TrainConfig:
        """Reads a config from YAML text or a YAML file (as written by `to_yaml`).

        Example:
            >>> cfg = TrainConfig.from_yaml("runs/fastcnn-20250101-120000/config.yaml")
        """
        text = str(text_or_path)
        if "\n" not in text and Path(text).is_file():
            text = Path(text).read_text(encoding="utf-8")
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ValueError(f"a config is a mapping of option: value, got {type(data).__name__}")
        return cls.from_dict(data)

    def replace(self, **changes) -> TrainConfig:
        """A copy with some fields changed (unknown names refused as in `from_dict`)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})
