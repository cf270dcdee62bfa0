"""Object detection as a task of the training engine: what it supplies to `convkit.train.Trainer`.

=================  ================================================================================
data               `--data`: a COCO JSON file, a Pascal VOC folder or a YOLO folder (`load_detection`), or
                   "default"/"scenes", the built-in scenes (2,000 training scenes, 300 held-out ones, 96x96,
                   1-4 Fashion-MNIST items each, generator seed 0; one item each for the localiser); `--val-data`
                   likewise, else 10% of the training images held out with the run's seed. Images of
                   different sizes are resized to the first image's size (boxes moved with them).
model              `--model yolo|fasterrcnn|retinanet|localizer` (`DETECTORS`) on `--backbone` (a zoo name,
                   model file, run or checkpoint; default fastcnn), the detector's options as --model-arg
augmentation       `convkit.data.Augmenter.detection`: flips, crops, the affine warp, scale-jitter and mosaic
                   move the boxes with the pixels (`--augment mosaic=0.5,scale_jitter=0.25,...`)
loss               the detector's loss terms, summed; each term is a column of metrics.csv and a curve
evaluation         COCO's AP@[.5:.95] (picks the best checkpoint), AP50, AP75 by pycocotools; the best epoch's
                   12 COCO numbers and per-class AP go into the TrainResult
checkpoint         the class names; the detector's spec rebuilds it (`convkit evaluate`, `convkit predict`)
pictures           curves.png (each loss term, mAP per epoch), val_predictions.png (predicted and true boxes)
=================  ================================================================================

>>> from convkit.train.task import get_task
>>> task = get_task("detect")
>>> task.monitor, task.eval_fields
('test_map', ('test_map', 'test_map50', 'test_map75'))
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
from torch import nn

from convkit.data.errors import DataFormatError
from convkit.tasks.detection.data import DetectionDataset, load_detection
from convkit.tasks.detection.detector import DEFAULT_BACKBONE, DETECTORS, build_detector
from convkit.train.task import Task, TaskAugmenter, check_model_names, given_or_loaded, register_task

__all__ = ["DetectionTask", "detections_of", "load_detection_data", "scenes_dataset"]

BUILTIN = ("default", "scenes")
SCENES_TRAIN, SCENES_VAL = 2000, 300  # the built-in scenes (as benchmarks/bench_detect_peer.py writes them)
PREVIEW = 12  # validation images drawn with their detections in val_predictions.png
SHOWN_SCORE = 0.3  # the least score of a detection drawn there


@functools.lru_cache(maxsize=4)  # the same scenes for every run of a process (generating 2,300 takes seconds)
def scenes_dataset(split: str, count: int | None = None, objects=(1, 4), seed: int = 0,
                   masks: bool = False) -> DetectionDataset:
    """The built-in scenes as a `DetectionDataset` ("train": 2,000, "val": 300 of held-out items), the same
    images and boxes `write_scenes` writes with the same arguments (with ``masks=True`` also their instance
    masks, uint8 (M, H, W), for instance segmentation).

    Example:
        >>> scenes_dataset("val", count=4)
        DetectionDataset(4 images of (1, 96, 96), ... objects, 10 classes, source 'scenes (val, seed 0)')
    """
    from convkit.tasks.detection.scenes import make_scenes

    count = count or (SCENES_TRAIN if split == "train" else SCENES_VAL)
    images, targets, classes = make_scenes(count, seed=seed, objects=objects, split="train" if split == "train"
                                           else "test", masks=bool(masks))
    targets = [{k: t[k] for k in ("boxes", "labels", "iscrowd", "masks") if k in t} for t in targets]
    return DetectionDataset(images, targets, classes, f"scenes ({split}, seed {seed})")


def builtin(data) -> bool:
    """Whether `data` names the built-in scenes ("default" or "scenes", when no such file or folder exists here)."""
    return data is not None and str(data) in BUILTIN and not os.path.exists(str(data))


def load_detection_data(config, log=print, masks: bool = False) -> tuple[DetectionDataset, DetectionDataset, str]:
    """(training set, validation set, a description of the validation set) of a detection run's config; with
    `masks` the instance masks too (the scenes' own, COCO segmentations)."""
    localizer = config.model == "localizer"
    objects = (1, 1) if localizer else (1, 4)
    if builtin(config.data):
        train = scenes_dataset("train", objects=objects, masks=masks)
    else:
        train = load_detection(config.data, "train" if _has_split(config.data, "train") else None,
                               classes=config.classes, masks=masks)
    if builtin(config.test_data):
        test, what = scenes_dataset("val", objects=objects, masks=masks), "scenes (val)"
    elif config.test_data:
        test, what = load_detection(config.test_data, classes=train.classes, masks=masks), str(config.test_data)
    elif builtin(config.data):
        test, what = scenes_dataset("val", objects=objects, masks=masks), "scenes (val: held-out items)"
    elif _has_split(config.data, "val"):
        test, what = (load_detection(config.data, "val", classes=train.classes, masks=masks),
                      f"{config.data} (val split)")
    else:
        train, test = train.split(0.1, seed=config.seed)
        what = f"{config.data} (held-out 10%)"
        log(f"{config.data}: no validation data; holding out 10% of the images ({len(test):,}) with seed {config.seed}")
    return train, test, what


def _check_model(config) -> None:
    """`config.model` is a detector, or (as a backbone for the default detector) a zoo name, file or run."""
    check_model_names(config, DETECTORS, "detector")


def _has_split(path, split: str) -> bool:
    """A folder with that split: `annotations/instances_<split>.json`, `<split>.json` or a YOLO `<split>/labels`."""
    p = Path(str(path))
    return p.is_dir() and any((p / q).exists() for q in (f"annotations/instances_{split}.json", f"{split}.json",
                                                          f"instances_{split}.json", f"{split}/labels"))


def _one_size(data: DetectionDataset, size: tuple[int, int] | None, log) -> DetectionDataset:
    """Images resized to `size` (default: the first image's) when they differ from it, boxes moved with them."""
    shape = data.image_shape
    if size is None:
        size = tuple(shape[1:]) if shape is not None else tuple(data.images[0].shape[1:])
    if shape is not None and tuple(shape[1:]) == tuple(size):
        return data
    log(f"{data.source}: images resized to {size[0]}x{size[1]} (boxes moved with them)")
    return data.resized(*size)


def detections_of(model: nn.Module, data: DetectionDataset, mean: torch.Tensor, std: torch.Tensor,
                  batch_size: int = 64, device="cpu", autocast_dtype=None, channels_last: bool = True) -> list[dict]:
    """The detections of `model` (a `Detector`) on every image of `data`, in order (CPU tensors)."""
    device = torch.device(device)
    scale = (1 / (255 * std)).to(device).view(1, -1, 1, 1)
    shift = (-mean / std).to(device).view(1, -1, 1, 1)
    model.eval()
    found = []
    with torch.no_grad():
        for images, _ in data.batches(batch_size, shuffle=False):
            x = images.to(device).float() * scale + shift
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                found += model(x)
    return found


class _DetectionAugmenter(TaskAugmenter):
    """`Augmenter.detection` in the engine's form: ``(images, targets) -> (x, targets)``."""

    def __call__(self, images: torch.Tensor, targets: list[dict]):
        return self.augmenter.detection(images, targets)


@register_task
class DetectionTask(Task):
    """Objects with boxes: a detector's loss terms, COCO mAP by pycocotools, pictures of boxes.

    Attributes:
        classes: the class names, from the training data (or the resumed checkpoint).
        loss_terms: the detector's loss terms (set when the model is built).
    """

    name = "detect"
    task_noun = "detection"  # in messages
    masks = False  # whether the data is read with its instance masks (the instance task's)
    unused_parameters = True  # a backbone's layers after the cut, a classifier's head the detector does not use
    monitor = "test_map"
    eval_fields = ("test_map", "test_map50", "test_map75")
    # the recipe of benchmarks/bench_detect.py: 12 epochs of the scenes take about 5 minutes on 2 CPU cores
    defaults = {"model": "yolo", "epochs": 12, "batch_size": 32, "lr": 5e-3, "weight_decay": 5e-4, "ema": 0.0,
                "augment": {"horizontal_flip": True}, "warmup_epochs": 1.0}

    def __init__(self):
        self.classes: list[str] = []
        self.train_fields: tuple[str, ...] = ()
        self.image_size: tuple[int, int] = (0, 0)
        self.preview: DetectionDataset | None = None
        self.data_note = ""

    # --- data ------------------------------------------------------------------------------------------------

    def load_data(self, config, train_data=None, test_data=None, log=print):
        _check_model(config)  # before the data is read: a typo costs no time
        load = functools.partial(load_detection_data, masks=self.masks)
        train, test, self.data_note = given_or_loaded(config, train_data, test_data, load, DetectionDataset,
                                                      self.task_noun, log)
        train = _one_size(train, None, log)
        test = _one_size(test, tuple(train.image_shape[1:]), log)
        if test.channels != train.channels:
            raise DataFormatError(f"{test.source}: {test.channels}-channel images, the training images have "
                                  f"{train.channels}")
        return train, test.with_stats(train.mean, train.std)

    def setup(self, train, test, model: nn.Module | None, meta: dict | None) -> None:
        """Class names from the training data; the validation set must use the same ones."""
        if list(test.classes) != list(train.classes):
            raise DataFormatError(f"{test.source}: classes {test.classes} differ from the training data's "
                                  f"{train.classes}")
        self.classes = list(train.classes)
        self.image_size = tuple(train.image_shape[1:])
        self.preview = test.subset(range(min(PREVIEW, len(test))))

    def model_args(self, train) -> dict:
        return {"num_classes": len(self.classes), "in_channels": int(train.image_shape[0])}

    def describe(self) -> str:
        return f"{len(self.classes)} classes; validation: {self.data_note}"

    def build_model(self, config, args: dict, model: nn.Module | None, input_shape):
        """The detector `config.model` names on `config.backbone` (a classifier name as --model: that
        backbone under the default detector)."""
        if model is None:
            kind, backbone = config.model, config.backbone
            if kind not in DETECTORS:  # `--task detect resnet18`: the default detector on that backbone
                kind, backbone = self.defaults["model"], backbone or kind
            model = build_detector(kind, backbone or DEFAULT_BACKBONE, args["num_classes"], args["in_channels"],
                                   self.image_size, config.backbone_kwargs, **config.model_kwargs)
        if not hasattr(model, "loss_terms"):
            raise DataFormatError(f"{type(model).__name__} is not a detector; build one with "
                                  "convkit.tasks.detection.build_detector")
        self.train_fields = tuple(t if t.startswith("loss") else f"loss_{t}" for t in model.loss_terms)
        return model, model.model_cfg.spec, model.model_cfg.name

    # --- training --------------------------------------------------------------------------------------------

    def augmenter(self, config) -> _DetectionAugmenter:
        from convkit.data import Augmenter

        return _DetectionAugmenter(Augmenter(config.augment_config(), seed=config.seed))

    def forward(self, model: nn.Module, x: torch.Tensor, targets):
        return model(x, targets)

    def shard(self, targets, dist):

        if not dist.enabled:
            return targets
        sizes = [len(c) for c in torch.arange(len(targets)).tensor_split(dist.world_size)]
        start = sum(sizes[:dist.rank])
        return targets[start:start + sizes[dist.rank]]

    def loss(self, outputs: dict, targets) -> tuple[torch.Tensor, torch.Tensor]:
        """The sum of the terms, and each term times the batch size (the engine averages them per image)."""
        terms = list(outputs.values())
        n = len(targets)
        return sum(terms), torch.stack([t.detach() for t in terms]) * n

    # --- evaluation, inference, pictures ---------------------------------------------------------------------

    def evaluate(self, model: nn.Module, data, mean: torch.Tensor, std: torch.Tensor, **options):
        from convkit.tasks.detection.metrics import coco_metrics

        batch = min(int(options.pop("batch_size", 64)), 64)
        found = detections_of(model, data, mean, std, batch, **options)
        m = coco_metrics(found, data.targets, len(self.classes))
        row = {"test_map": _finite(m["AP"]), "test_map50": _finite(m["AP50"]), "test_map75": _finite(m["AP75"])}
        preview = [{k: v.tolist() for k, v in d.items()} for d in found[:PREVIEW]]
        return row, {"coco": m, "preview": preview}

    def meta(self) -> dict:
        return {"classes": self.classes}

    def plots(self, run_dir: Path, history: list[dict], best: dict | None, extra, title: str) -> None:
        plot_detection_curves(history, self.train_fields, run_dir / "curves.png", title)
        if extra is not None and best is not None and self.preview is not None and extra.get("preview"):
            found = [{"boxes": torch.tensor(p["boxes"]).reshape(-1, 4), "labels": torch.tensor(p["labels"], dtype=torch.long),
                      "scores": torch.tensor(p["scores"])} for p in extra["preview"]]
            draw_detections(self.preview.images_tensor().cpu(), found,
                            [{k: v.cpu() for k, v in t.items()} for t in self.preview.targets], self.classes,
                            run_dir / "val_predictions.png")

    def result_fields(self, extra) -> dict:
        return {"classes": self.classes}


def draw_detections(images: torch.Tensor, found: list[dict], targets: list[dict], classes, path) -> Path:
    """The first `PREVIEW` images with their detections of score >= `SHOWN_SCORE` in class colours over the true
    boxes in white (`draw_scenes`; instance masks painted under them when the detections have "masks"):
    val_predictions.png of a run, eval_predictions.png of `convkit evaluate`."""
    from convkit.tasks.detection.scenes import draw_scenes

    n = min(PREVIEW, len(found), len(images))
    shown = [{k: v[d["scores"] >= SHOWN_SCORE] for k, v in d.items()} for d in found[:n]]
    return draw_scenes(images[:n], shown, classes, path, columns=4, zoom=3, truth=targets[:n],
                       masks=any("masks" in d for d in shown))


def _finite(value: float) -> float:
    """COCO's -1 (nothing to measure) as 0 in the per-epoch row, so the best epoch is well defined."""
    return float(value) if value >= 0 else 0.0


def plot_detection_curves(history: list[dict], terms, path, title: str = "") -> Path:
    """curves.png of a detection run: each loss term per epoch (left), mAP@[.5:.95], mAP@0.5 and mAP@0.75 per
    epoch (right), and mask mAP when the history has it (instance segmentation).

    Example:
        >>> history = [{"epoch": 1, "train_loss": 2.0, "loss_xy": 1.5, "test_map": 0.1, "test_map50": 0.3,
        ...             "test_map75": 0.05}]
        >>> plot_detection_curves(history, ["loss_xy"], "runs/d/curves.png").name
        'curves.png'
    """
    from matplotlib.figure import Figure

    from convkit.train.runfolder import _save_figure

    fig = Figure(figsize=(11, 4))
    ax_loss, ax_map = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in history]
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "-o", color="black", label="total")
    for term in terms:
        ax_loss.plot(epochs, [r[term] for r in history], "-", label=term.removeprefix("loss_"))
    ax_loss.set(xlabel="epoch", ylabel="training loss (per image)", title="loss terms", yscale="log"
                if all(r["train_loss"] > 0 for r in history) else "linear")
    for key, label in (("test_map", "mAP@[.5:.95]"), ("test_map50", "mAP@0.5"), ("test_map75", "mAP@0.75"),
                       ("test_mask_map", "mask mAP@[.5:.95]"), ("test_mask_map50", "mask mAP@0.5")):
        if all(key in r for r in history):  # mask AP: instance segmentation runs
            ax_map.plot(epochs, [100 * r[key] for r in history], "-s" if "mask" not in key else "--^", label=label)
    ax_map.set(xlabel="epoch", ylabel="%", title="validation mAP (COCO, pycocotools)", ylim=(0, 100))
    for ax in (ax_loss, ax_map):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save_figure(fig, path)

