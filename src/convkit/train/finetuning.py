"""Fine-tuning on the training engine: a trained network reused on new data, in phases.

The lectures' two recipes, as one engine run (`FinetuneTrainer`, a `Trainer` whose optimizer follows phases):

* **Feature extractor** (``strategy="features"``): the network without its last layer computes the features of
  the new images once (`convkit.reuse.cached_features`: cached by weights, data, transform and layer), and a new
  linear classifier trains on them, so an epoch costs only the classifier. The run saves the whole network
  (the body and the new classifier), so ``evaluate``, ``predict`` and ``report`` take images as for any run.
* **Fine-tuning** (``head``, ``finetune``, ``gradual``): a new head on the frozen body, then the deepest stages
  (or all) unfrozen with a smaller learning rate, at once or one stage at a time. Each phase has its own
  optimizer and schedule over its epochs, with one parameter group per trainable stage
  (`convkit.reuse.param_groups`); frozen stages keep their batch-norm statistics (``bn="freeze"``).

Before anything trains, the SOURCE is fitted to the data and every change is printed and recorded
(`convkit.reuse.adapt_input_channels`, `convkit.reuse.adapt_head`): input channels, input size, class count.
The run folder holds, besides what every run holds, ``finetune.json``: the source and the SHA-256 of its
weights, the adaptations, the normalisation, each phase (epochs, trainable and frozen parameters, the peak rate
of each group) and the rate of each group at the end of every epoch. A run killed in any phase, or between
two, resumes bit-exactly on CPU (`convkit train --resume RUN` or ``finetune(resume=RUN)``).

>>> result = finetune("fastcnn", data="digits", strategy="finetune", epochs=2, head_epochs=1, limit=128,
...                   test_limit=64, quiet=True, runs_dir="runs")   # a zoo name: untrained, the baseline
adapt: classes 10 -> 10 (other classes than the source's): fc Linear(3136 -> 10) replaced by a new Linear(3136 -> 10)
fine-tuning fastcnn ...
phase head: epochs 1-1; ...
epoch 1/2 ...
phase finetune: epochs 2-2; ...
epoch 2/2 ...
>>> [row["phase"] for row in result.history]
['head', 'finetune']
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from convkit.data.tensor import ImageTensorDataset
from convkit.errors import ConvkitError
from convkit.models.reference import ModelCfg, resolve_model
from convkit.reuse.adapt import Adaptation, adapt_head, adapt_input_channels
from convkit.reuse.freeze import FreezeError, apply_bn_policy, freeze, model_stages, param_groups
from convkit.train.config import ConfigError, FinetuneConfig, TrainConfig
from convkit.train.runfolder import atomic_write_text
from convkit.train.schedule import build_optimizer, build_scheduler
from convkit.train.trainer import Trainer, TrainResult, _check_fit, _resume_file

__all__ = ["FINETUNE_FILE", "FeatureSet", "FinetuneError", "FinetuneTrainer", "Phase", "finetune", "load_source",
           "plan_phases"]

FINETUNE_FILE = "finetune.json"
FORMAT = "convkit-finetune-1"
CACHE_ENV = "CONVKIT_CACHE"


class FinetuneError(ValueError, ConvkitError):
    """Data or a source that cannot be fine-tuned as asked (one class, no images, a stage it lacks...)."""


# --- the phases ------------------------------------------------------------------------------------------------

@dataclass
class Phase:
    """One phase of a fine-tuning run: which stages train, at which peak rate, for which epochs.

    Attributes:
        name: "features", "head", "finetune" or "unfreeze <stage>" (gradual).
        start: its first epoch, counted from 0.
        epochs: how many epochs it lasts.
        trainable: what `convkit.reuse.freeze` keeps trainable: "head", or the number of stages below it.
        lr: the head's peak learning rate (the stages' too unless ``stage_lrs``).
        stage_lrs: None, a decay per stage, or {stage: lr} (`convkit.reuse.param_groups`).
    """

    name: str
    start: int
    epochs: int
    trainable: str | int
    lr: float
    stage_lrs: float | dict | None = None

    @property
    def end(self) -> int:
        """The epoch after its last (counted from 0)."""
        return self.start + self.epochs

    def to_dict(self) -> dict:
        """JSON-able, with 1-based inclusive epochs (``"epochs": [first, last]``) as metrics.csv counts them."""
        return {"name": self.name, "epochs": [self.start + 1, self.end], "trainable": self.trainable,
                "lr": self.lr, "stage_lrs": self.stage_lrs}


def _unfreeze_count(unfreeze: str, stages: list[str]) -> int:
    """How many stages below the head `unfreeze` ("all", "K" or a stage name) makes trainable."""
    below = len(stages) - 1
    text = str(unfreeze).strip()
    if text == "all":
        return below
    if text.isdigit():
        return min(int(text), below)
    if text in stages[:-1]:
        return below - stages.index(text)
    raise ConfigError(f"unfreeze {text!r} is not a stage of this model below its head; its stages are: "
                      f"{', '.join(stages)} (or all, or a number)", "unfreeze")


def plan_phases(config: FinetuneConfig, stages: list[str]) -> list[Phase]:
    """The phases of a fine-tuning run, from its config and the model's stages (input to output, head last).

    Args:
        config: strategy, epochs, head_epochs, unfreeze, unfreeze_every, lr, finetune_lr, lr_decay, stage_lrs.
        stages: the stage names (`convkit.reuse.model_stages`).

    Returns:
        The phases in order; together they cover every epoch once.

    Raises:
        ConfigError: ``unfreeze`` names no stage of the model.

    >>> cfg = FinetuneConfig(strategy="gradual", epochs=6, head_epochs=2, lr=0.01)
    >>> [(p.name, p.start, p.epochs, p.trainable, p.lr) for p in plan_phases(cfg, ["stem", "layer1", "layer2", "head"])]
    [('head', 0, 2, 'head', 0.01), ('unfreeze layer2', 2, 1, 1, 0.001), ('unfreeze layer1', 3, 1, 2, 0.001), ('unfreeze stem', 4, 2, 3, 0.001)]
    """
    lr, epochs, strategy = config.lr, config.epochs, config.strategy
    if strategy in ("features", "head"):
        return [Phase(strategy, 0, epochs, "head", lr)]
    tuned = config.finetune_lr or lr / 10
    rates = dict(config.stage_lrs) or (config.lr_decay if config.lr_decay < 1 else None)
    count = _unfreeze_count(config.unfreeze, stages)
    head = config.head_epochs
    phases = [Phase("head", 0, head, "head", lr)] if head else []
    if strategy == "finetune" or count == 0:
        return [*phases, Phase("finetune", head, epochs - head, count if count else "head", tuned, rates)]
    start, k = head, 1
    while start < epochs and k <= count:
        length = config.unfreeze_every if k < count else epochs - start
        length = min(length, epochs - start)
        phases.append(Phase(f"unfreeze {stages[-1 - k]}", start, length, k, tuned, rates))
        start, k = start + length, k + 1
    if start < epochs:  # all stages unfrozen before the last epoch: the last phase goes on
        phases[-1] = replace(phases[-1], epochs=phases[-1].epochs + epochs - start)
    return phases


# --- the source ------------------------------------------------------------------------------------------------

def _digest(path) -> str:
    from convkit.data.download import file_digest

    return file_digest(path)


def load_source(source: str | os.PathLike | None, weights: str | None = None,
                log=print) -> tuple[nn.Module, dict]:
    """The network to reuse, with what the run folder records of it.

    Args:
        source: a run folder or checkpoint, a foreign weights file (torchvision/timm state dict: .safetensors,
            or .pth/.pt read with ``weights_only=True``; its zoo twin is found by `convkit.models.foreign`),
            a model file or a zoo name (untrained weights: the from-scratch baseline); ignored with ``weights``.
        weights: a torchvision weight name ("resnet18.IMAGENET1K_V1"), downloaded and checked by torchvision.
        log: where the weight-match table of foreign weights is printed.

    Returns:
        (the model in eval mode, carrying its ``model_cfg``; {"ref", "kind", "file", "sha256", "trained",
        "name", "classes", "input_shape"}), where ``sha256`` is the SHA-256 of the weights file (of the
        state dict for an untrained model).

    Raises:
        CheckpointError: weights that fit no zoo model or not the one named (the mismatch table in the message),
            or a file `weights_only` refuses (nothing in it is run).
        WeightsDownloadError: a torchvision weight that cannot be downloaded (where to put the file).
        FileNotFoundError, UnknownModelError: no such source.

    >>> model, info = load_source("lenet5")
    >>> info["kind"], info["trained"], len(info["sha256"])
    ('zoo', False, 64)
    """
    from convkit.models.foreign import load_foreign, torchvision_weights
    from convkit.models.reference import _is_foreign
    from convkit.reuse.features import weights_sha256

    match = None
    if weights:
        model, match = torchvision_weights(weights, progress=True)
        kind, ref = "torchvision", str(weights)
    elif source is None:
        raise FinetuneError("no SOURCE: give a run folder, a checkpoint, a weights file or a zoo name, or "
                        "--weights NAME (a torchvision weight)")
    else:
        ref, path = str(source), Path(source)
        if path.is_file() and _is_foreign(path):
            model, match = load_foreign(path)
            kind = "foreign"
        else:
            model = resolve_model(source)
            kind = model.model_cfg.source
    cfg = model.model_cfg
    if match is not None:
        log(f"weights {ref}: {match.table()}")
    file = cfg.checkpoint if cfg.trained and cfg.checkpoint else None
    info = {"ref": ref, "kind": kind, "file": str(file) if file else None,
            "sha256": _digest(file) if file else weights_sha256(model), "trained": bool(cfg.trained),
            "name": cfg.name, "classes": cfg.classes, "input_shape": list(cfg.input_shape or []) or None,
            "spec": cfg.spec}
    if match is not None:
        info["weight_match"] = match.to_dict()
    return model.eval(), info


# --- features as a dataset -------------------------------------------------------------------------------------

class FeatureSet(ImageTensorDataset):
    """Features (N, D) held as an (N, D, 1, 1) float "image" tensor, so the engine batches them as images.

    Its ``mean`` and ``std`` (0 and 1/255 for every feature) make the engine's normalisation ``x / (255 std) -
    mean / std`` leave the features exactly as they are.
    """

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, classes, source: str,
                 mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        if features.dim() == 2:
            features = features.reshape(len(features), -1, 1, 1)
        self.images, self.labels = features.float(), torch.as_tensor(labels).long().to(features.device)
        self.classes, self.source, self.sample_sources = list(classes), str(source), None
        self._mean, self._std = mean, std

    def __repr__(self) -> str:
        return f"FeatureSet({len(self)} samples of {self.images.shape[1]} features, source {self.source!r})"

    def _with(self, images, labels, index) -> FeatureSet:
        return FeatureSet(images, labels, self.classes, self.source, self._mean, self._std)

    def _stats(self) -> None:
        # The engine computes x / (255 std) - mean / std: with these, exactly x (1 / (255 / 255) is 1.0 in float32).
        # Standardising each feature instead cost 5 points of a linear classifier's accuracy on 100 digits.
        d = self.images.shape[1]
        self._mean, self._std = torch.zeros(d), torch.full((d,), 1 / 255)


class _FeatureHead(nn.Module):
    """The classifier that trains on the features: ``classifier(x.flatten(1))``."""

    classifier_name = "classifier"

    def __init__(self, classifier: nn.Linear):
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x.flatten(1))


def _classifier(model: nn.Module) -> tuple[str, nn.Linear]:
    """The final layer the features feed (the one `extract_features` takes the input of)."""
    from convkit.reuse.features import _is_classifier_net, _last_linear

    if _is_classifier_net(model):
        name, layer = model.classifier_name, model.get_classifier()
    else:
        name, layer = _last_linear(model)
    if not isinstance(layer, nn.Linear):
        raise FinetuneError(f"{type(model).__name__}'s classifier {name} is a {type(layer).__name__}, not a "
                            "Linear layer; --strategy features trains a linear classifier on the features (use "
                            "--strategy head for this model)")
    return name, layer


def default_cache_dir() -> Path:
    """Where the features strategy caches features: ``$CONVKIT_CACHE/features``, else ~/.cache/convkit/features."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "convkit"
    return Path(root) / "features"


# --- the trainer -----------------------------------------------------------------------------------------------

class FinetuneTrainer(Trainer):
    """The training engine with a SOURCE network, adaptations and phases (see the module docstring).

    Args:
        config: a `FinetuneConfig`, a dict of its fields, a YAML file, or None (fine-tunes fastcnn: untrained).
        train_data, test_data, resume, **overrides: as `Trainer` takes them.

    Raises:
        FinetuneError: an empty or one-class training set, or a classifier the strategy cannot train.
        ConfigError, FreezeError: an option the model does not fit (an ``unfreeze`` or ``stage_lrs`` stage it
            lacks).
        CheckpointError, FileNotFoundError, UnknownModelError: the source (named).
    """

    config_class = FinetuneConfig

    def __init__(self, config=None, *, train_data=None, test_data=None, resume=None, **overrides):
        if "model" in overrides and isinstance(overrides["model"], nn.Module):
            raise FinetuneError("finetune takes its network from SOURCE (a run, checkpoint, weights file or zoo "
                                "name), not a module: train a module with convkit.train(model=...)")
        super().__init__(config, train_data=train_data, test_data=test_data, resume=resume, **overrides)

    # --- set-up ---------------------------------------------------------------------------------------------

    def _data(self, train_data, test_data, model, meta) -> None:
        self._resume_meta = meta  # a resumed run rebuilds its network from its own checkpoint (see _model)
        super()._data(train_data, test_data, model, meta)
        counts = self.train_data.labels.bincount() if len(self.train_data) else torch.zeros(0)
        present = int((counts > 0).sum())
        if len(self.train_data) == 0:
            raise FinetuneError(f"{self.config.data}: the training set is empty; nothing to fine-tune on")
        if present < 2:
            raise FinetuneError(f"{self.config.data}: the training set has {present} class "
                                f"({len(self.train_data):,} images); a classifier needs at least two classes")
        if len(self.test_data) == 0:
            raise FinetuneError(f"{self.config.test_data or self.config.data}: the test set is empty")

    def _model(self, model) -> None:
        """The source, fitted to the data (adaptations printed and recorded), its normalisation, the phases."""
        cfg = self.config
        self._seed_everything(cfg.seed)  # the new head's initial weights depend on the seed alone
        args = self.task.model_args(self.train_data)
        if self._resume_meta is not None:
            source, spec = self._from_run(self._resume_meta)
        else:
            source, self.source_info = load_source(cfg.model, cfg.weights, log=self._print)
            self.adaptations = self._adapt(source, args)
            src = source.model_cfg
            from_source = self.source_info["trained"] and src.mean is not None
            if from_source:  # the network reads images as it was trained to (its own mean and std)
                self.mean, self.std = src.mean_std(self.input_shape[0])
            self.normalisation = {"mean": self.mean.tolist(), "std": self.std.tolist(),
                                  "from": "source" if from_source else "data"}
            spec = dict(src.spec) if isinstance(src.spec, dict) else src.spec
            resized = [a.to_dict() for a in self.adaptations if a.kind == "input_size"]
            if isinstance(spec, dict) and resized:
                spec["adapt"] = resized
        self._set_scale(self.mean, self.std)
        self.spec = spec
        name = self.source_info["name"]
        source.model_cfg = ModelCfg(name, task=self.task.name, input_shape=self.input_shape,
                                    num_classes=args.get("num_classes"), classes=self.task.meta().get("classes"),
                                    mean=tuple(self.mean.tolist()), std=tuple(self.std.tolist()), spec=spec,
                                    source="module")
        _check_fit(source, name, self.input_shape)
        self.full_model = source.to(self.device)
        self.features = cfg.strategy == "features"
        if self.features:
            self._feature_data()
        else:
            self.model = self.full_model
            if cfg.channels_last is not False:
                self.model = self.model.to(memory_format=torch.channels_last)
        self.stage_names = [s.name for s in model_stages(self.full_model)]
        self.phases = plan_phases(cfg, self.stage_names)
        self.phase = 0
        self.phase_records: dict[str, dict] = {}
        self.freeze_record = None

    def _from_run(self, meta: dict) -> tuple[nn.Module, dict]:
        """A resumed run's network, rebuilt from its own checkpoint's spec (the source is not read again: it may be
        gone or changed since), with the record of its source and adaptations from finetune.json."""
        from convkit.models.reference import build_from_spec
        from convkit.models.weights import load_tensors

        file = self.run_dir / FINETUNE_FILE
        try:
            record = json.loads(file.read_text(encoding="utf-8"))
            self.source_info, self.normalisation = dict(record["source"]), dict(record["normalisation"])
            self.adaptations = [Adaptation(**a) for a in record["adaptations"]]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise FinetuneError(f"{file}: the fine-tuning record this run resumes from cannot be read ({err}); "
                                "start the run again") from None
        spec = meta["model"]
        model = build_from_spec(spec)
        if self.config.strategy == "features":  # the body is not in the training state: its saved network is
            tensors, _ = load_tensors(self.run_dir / "last.safetensors")
            model.load_state_dict(tensors)
        self._print(f"resuming: the network rebuilt from {self.run_dir} (source {self.source_info['ref']}, "
                    f"SHA-256 {self.source_info['sha256'][:16]}...)")
        return model, spec

    def _adapt(self, model: nn.Module, args: dict) -> list:
        """Input channels, input size and classes of the data; each change printed."""
        changes = []
        channels = int(self.input_shape[0])
        change = adapt_input_channels(model, channels)
        if change is not None:
            changes.append(change)
        classes = self.task.meta().get("classes")
        source_classes = self.source_info.get("classes")
        new_head = source_classes is None or list(source_classes) != list(classes or [])
        changes += adapt_head(model, args.get("num_classes"), self.input_shape, mode=self.config.head_mode,
                              new_head=new_head)
        for change in changes:
            self._print(f"adapt: {change.text}")
        return changes

    def _set_scale(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self._scale = (1 / (255 * std)).to(self.device).view(1, -1, 1, 1)
        self._shift = (-mean / std).to(self.device).view(1, -1, 1, 1)

    def _feature_data(self) -> None:
        """Features of both sets, computed once (cached); the engine then trains the classifier on them."""
        from convkit.reuse.features import cached_features

        cfg = self.config
        model = self.full_model.eval()
        self.classifier_name, classifier = _classifier(model)
        key = hashlib.sha256(json.dumps([self.source_info["sha256"], [a.to_dict() for a in self.adaptations
                                                                       if a.kind != "classes"]],
                                        sort_keys=True).encode()).hexdigest()
        cache = Path(cfg.features_cache) if cfg.features_cache else default_cache_dir()
        batch = cfg.eval_batch_size or (2048 if self.device.type == "cuda" else 256)
        sets = []
        for data in (self.train_data, self.test_data):
            f, y = cached_features(model, key, data, cache, batch_size=batch, device=self.device,
                                   progress=not cfg.quiet)
            sets.append(FeatureSet(f.to(self.device), y.to(self.device), data.classes, f"{data.source} (features)"))
        train, test = sets
        test._mean, test._std = train.mean, train.std
        self.train_data, self.test_data = train, test
        self.feature_cache = str(cache)
        self.mean, self.std = train.mean.clone(), train.std.clone()  # 0 and 1/255: the features as they are
        self._set_scale(self.mean, self.std)
        for name, p in self.full_model.named_parameters():
            p.requires_grad_(name.startswith(self.classifier_name + "."))
        self.model = _FeatureHead(classifier)

    # --- phases ---------------------------------------------------------------------------------------------

    def _phase_at(self, epoch: int) -> int:
        return next((i for i, p in enumerate(self.phases) if p.start <= epoch < p.end), len(self.phases) - 1)

    def _build_optimizer(self) -> None:
        """The current phase's freezing, parameter groups (one per trainable stage), optimizer and schedule."""
        phase = self.phases[self.phase]
        record = freeze(self.model, phase.trainable, self.config.bn)
        self.freeze_record = record
        try:
            groups = param_groups(self.model, phase.lr, phase.stage_lrs)
        except FreezeError as err:
            raise ConfigError(f"{'stage_lrs' if isinstance(phase.stage_lrs, dict) else 'lr_decay'}: {err}",
                              "stage_lrs") from None
        self.optimizer = build_optimizer(self.model, self.config, groups)
        self.scheduler = build_scheduler(self.optimizer, self.config, self.steps_per_epoch, epochs=phase.epochs)
        self.phase_records[str(self.phase)] = self._record(phase, record, groups)

    def _record(self, phase: Phase, record, groups: list[dict]) -> dict:
        """What finetune.json says of a phase: epochs, rates, and which parameters of the saved network train."""
        peaks = {g["name"]: g["lr"] for g in groups}
        if self.features:  # the body is frozen as a whole: name the saved network's parameters
            names = [n for n, _ in self.full_model.named_parameters()]
            trained = [n for n in names if n.startswith(self.classifier_name + ".")]
            frozen = [n for n in names if n not in trained]
            stages = {"trainable_stages": [self.classifier_name], "frozen_stages": ["the body (features)"],
                      "frozen_bn": []}
        else:
            trained, frozen = record.trainable_params, record.frozen_params
            stages = {"trainable_stages": record.trainable_stages, "frozen_stages": record.frozen_stages,
                      "frozen_bn": record.frozen_bn}
        size = dict(self.full_model.named_parameters())
        return {**phase.to_dict(), **stages, "bn": record.bn, "group_lrs": peaks,
                "trainable_params": trained, "frozen_params": frozen,
                "trainable_size": sum(size[n].numel() for n in trained),
                "frozen_size": sum(size[n].numel() for n in frozen)}

    def _enter_phase(self, index: int) -> None:
        self.phase = index
        self._build_optimizer()
        if self.dist.enabled:  # DDP registers the trainable parameters when it wraps the model: wrap it again
            self._wrap_model()
        self._announce()

    def _announce(self) -> None:
        phase, record = self.phases[self.phase], self.phase_records[str(self.phase)]
        rates = ", ".join(f"{name} {lr:.3g}" for name, lr in record["group_lrs"].items())
        frozen = "the body" if self.features else (", ".join(record["frozen_stages"]) or "nothing")
        self._print(f"phase {phase.name}: epochs {phase.start + 1}-{phase.end}; frozen: {frozen} "
                    f"({record['frozen_size']:,} weights); trained: {', '.join(record['trainable_stages'])} "
                    f"({record['trainable_size']:,} weights); peak lr {rates}")

    def _train_mode(self) -> None:
        self.model.train()
        if self.freeze_record is not None:
            apply_bn_policy(self.model, self.freeze_record)

    def _run_epoch(self) -> str:
        index = self._phase_at(self.epoch)
        if index != self.phase:
            self._enter_phase(index)
        elif self.epoch == self.phases[index].start and self.position == 0:
            self._announce()
        return super()._run_epoch()

    # --- records ----------------------------------------------------------------------------------------------

    def _epoch_fields(self) -> dict:
        lrs: dict[str, float] = {}
        for group in self.optimizer.param_groups:
            lrs.setdefault(group.get("name", "all"), float(group["lr"]))
        return {"phase": self.phases[self.phase].name, "lr_groups": lrs}

    def _fields(self) -> tuple[str, ...]:
        fields = list(super()._fields())
        fields.insert(fields.index("lr"), "phase")
        return tuple(fields)

    def _saved_weights(self) -> dict:
        """The whole network: (features) the body, with the classifier as trained (the EMA's if on)."""
        if not self.features:
            return super()._saved_weights()
        state = dict(self.full_model.state_dict())
        for name, tensor in self.eval_model.classifier.state_dict().items():
            state[f"{self.classifier_name}.{name}"] = tensor
        return state

    def _meta(self, row: dict | None) -> dict:
        numbers = {k: v for k, v in (row or {}).items() if isinstance(v, int | float) and not isinstance(v, bool)}
        meta = super()._meta(numbers)
        if self.features:  # the saved network reads images, normalised as the source was trained
            meta["mean"], meta["std"] = self.normalisation["mean"], self.normalisation["std"]
        meta["finetune"] = {"strategy": self.config.strategy, "source": self.source_info["ref"],
                            "source_sha256": self.source_info["sha256"],
                            "phase": self.phases[self.phase].name}  # the phase the state belongs to
        return meta

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["progress"]["phase"] = self.phase
        state["progress"]["phase_records"] = self.phase_records
        return state

    def _load_state(self, state: dict) -> None:
        phase = int(state["progress"].get("phase", 0))
        if phase != self.phase:  # the optimizer of the phase the checkpoint was saved in, before its state loads
            self.phase = phase
            self._build_optimizer()
        super()._load_state(state)
        self.phase_records.update(state["progress"].get("phase_records") or {})

    def finetune_record(self) -> dict:
        """What finetune.json holds (see the module docstring)."""
        phases = []
        for i, phase in enumerate(self.phases):
            phases.append(self.phase_records.get(str(i), {**phase.to_dict(), "entered": False}))
        return {"format": FORMAT, "strategy": self.config.strategy, "source": self.source_info,
                "adaptations": [a.to_dict() for a in self.adaptations], "normalisation": self.normalisation,
                "stages": self.stage_names,
                **({"features_cache": self.feature_cache} if self.features else {}),
                "phases": phases,
                "lr_per_epoch": [{"epoch": r["epoch"], "phase": r.get("phase"), "lrs": r.get("lr_groups", {})}
                                 for r in self.history]}

    def _write_record(self, *_) -> None:
        if self.dist.is_main and self.run_dir is not None:
            atomic_write_text(self.run_dir / FINETUNE_FILE, json.dumps(self.finetune_record(), indent=1) + "\n")

    def fit(self) -> TrainResult:
        self._ensure_run_dir()
        self._write_record()
        if self._write_record not in self.on_epoch_end:
            self.on_epoch_end.append(self._write_record)
        return super().fit()

    def _plots(self) -> None:
        title = f"{self.source_info['name']} ({self.config.strategy}) on {Path(str(self.config.data)).name}"
        self.task.plots(self.run_dir, self.history, self.best, self.best_extra, title)

    def _describe(self) -> str:
        text = super()._describe()
        info = self.source_info
        what = "trained" if info["trained"] else "untrained: the from-scratch baseline"
        strategy = self.config.strategy
        if self.features:
            strategy += f" ({self.train_data.images.shape[1]:,} features per image, cached in {self.feature_cache})"
        return text.replace(f"training {self.config.model}", f"fine-tuning {info['ref']} ({what}; {strategy})", 1)


def _trainer_for(config) -> type[Trainer]:
    return FinetuneTrainer if isinstance(config, FinetuneConfig) else Trainer


def finetune(source: str | os.PathLike | None = None, config: FinetuneConfig | dict | str | None = None, *,
             train_data=None, test_data=None, resume: str | os.PathLike | None = None, **overrides) -> TrainResult:
    """Reuses a trained network on new data, as ``convkit finetune`` does: one engine run, in phases.

    Args:
        source: a run folder or checkpoint, torchvision/timm weights (.safetensors, .pth, .pt), or a zoo name
            (untrained: the from-scratch baseline); or None with ``weights=`` (a torchvision weight name).
        config: a `FinetuneConfig`, a dict, a YAML file, or None for the defaults.
        train_data, test_data: datasets to use instead of ``data``.
        resume: a fine-tuning run folder to continue (its config is kept).
        **overrides: `FinetuneConfig` fields: data, strategy, epochs, head_epochs, unfreeze, lr, finetune_lr,
            lr_decay, stage_lrs, bn, weights...

    Returns:
        A `TrainResult`; its run folder holds finetune.json besides what every run holds.

    Raises:
        FinetuneError: an empty or one-class dataset (before any training), or a source the strategy cannot use.
        CheckpointError: weights of another architecture (the mismatch table, naming the file), or a pickle that
            ``weights_only`` refuses (nothing in it is run).

    Example:
        >>> result = finetune("fastcnn", data="digits", strategy="features", epochs=1, limit=64, test_limit=32,
        ...                   quiet=True, runs_dir="runs", features_cache="cache")
        adapt: ...
        >>> result.history[-1]["phase"], (result.run_dir / "finetune.json").is_file()
        ('features', True)
    """
    if resume is not None:
        return FinetuneTrainer(resume=resume, **overrides).fit()
    if source is not None:
        overrides["model"] = os.fspath(source) if isinstance(source, os.PathLike) else source
    return FinetuneTrainer(config, train_data=train_data, test_data=test_data, **overrides).fit()


def resolve_trainer(config, resume) -> type[Trainer]:
    """The engine class of a run: a fine-tuning run (its config has a strategy) or a plain one."""
    if resume is not None:
        from convkit.models.weights import read_meta

        file = _resume_file(resume)
        if file is not None:
            return _trainer_for(TrainConfig.from_dict(read_meta(file).get("config") or {}))
        return _trainer_for(TrainConfig.from_yaml(Path(resume) / "config.yaml"))
    return _trainer_for(config)

