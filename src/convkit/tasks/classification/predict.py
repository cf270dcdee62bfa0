"""Prediction on image files: the top classes with their probabilities, one result per file.

Any image mode becomes what the model was trained on (`convkit.data.decode_image`: grayscale, RGBA,
palette, 16-bit, EXIF-rotated; resized to the training size). A file that cannot be decoded is reported
by its path and the others go on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from convkit.data.errors import DataFormatError
from convkit.data.folder import IMAGE_EXTENSIONS, decode_image
from convkit.models.reference import Checkpoint


@dataclass
class Prediction:
    """The result for one file: `top` as [(class name, probability), ...] best first, or an `error`."""

    path: str
    top: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        if self.error:
            return {"path": self.path, "error": self.error}
        return {"path": self.path, "predictions": [{"class": c, "probability": p} for c, p in self.top]}


def expand_inputs(inputs: list[str | os.PathLike] | str | os.PathLike) -> list[Path]:
    """Files as given; folders searched recursively for images (.png .jpg .jpeg .bmp .webp), sorted.

    Raises:
        FileNotFoundError: a path that does not exist.
    """
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                            and not any(part.startswith(".") for part in p.relative_to(path).parts))
        elif path.exists():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return files


@torch.no_grad()
def predict(checkpoint: Checkpoint | str | os.PathLike | torch.nn.Module, inputs, top: int = 5, batch_size: int = 64,
            device: str | torch.device = "cpu") -> list[Prediction]:
    """Classifies image files with a trained model.

    Args:
        checkpoint: a run folder, a .safetensors checkpoint, a `Checkpoint` or a trained module (any reference
            `convkit.models.resolve_model` takes that has class names).
        inputs: image files and/or folders (searched recursively).
        top: how many classes to report per image.
        batch_size: images per forward pass.
        device: where to run.

    Returns:
        One `Prediction` per file, in input order; unreadable files carry `error` (naming the file).

    Raises:
        CheckpointError: the checkpoint is not a safetensors file (nothing in it is executed).
        FileNotFoundError: an input path does not exist.

    Example:
        >>> from PIL import Image
        >>> Image.fromarray(convkit.data.load_default("test").images[5, 0].numpy()).save("shoe.png")   # a sneaker
        >>> photos = image_folder("photos", per_class=1)     # photos/daisy/000.png, photos/rose/000.png
        >>> results = predict(tiny_run, ["shoe.png", "photos/"], top=3)   # a run folder trained one epoch
        >>> [p.path for p in results]
        ['shoe.png', 'photos/daisy/000.png', 'photos/rose/000.png']
        >>> name, probability = results[0].top[0]            # the best guess and its probability
        >>> len(results[0].top), 0 < probability <= 1
        (3, True)
        >>> name                                             # after one epoch on 128 images: it varies
        '...'
    """
    from convkit.tasks.classification.metrics import trained_model

    model = trained_model(checkpoint, device)
    cfg = model.model_cfg
    c, h, w = cfg.input_shape
    classes = cfg.classes
    results = [Prediction(str(p)) for p in expand_inputs(inputs)]
    good: list[tuple[Prediction, torch.Tensor]] = []
    for r in results:
        try:
            good.append((r, decode_image(r.path, channels=c, image_size=(h, w))))
        except (DataFormatError, OSError) as err:
            r.error = str(err) if r.path in str(err) else f"{r.path}: {err}"
    for start in range(0, len(good), batch_size):
        chunk = good[start:start + batch_size]
        values, indices = top_classes(model, torch.stack([image for _, image in chunk]).to(device), top)
        for (r, _), v, i in zip(chunk, values, indices):
            r.top = [(classes[j], float(p)) for p, j in zip(v.tolist(), i.tolist())]
    return results


@torch.no_grad()
def top_classes(model: torch.nn.Module, images: torch.Tensor, top: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities, class indices), each (N, k) best first, of uint8 images (N, C, H, W) (or floats on 0..255)
    at a trained classifier's input size: normalised by its `ModelCfg`, and averaged with the mirror images when it
    was trained with flips (as training evaluated it). What `predict` and `convkit serve` answer.

    >>> model = convkit.create_model("lenet5", num_classes=3).eval()
    >>> values, indices = top_classes(model, torch.zeros(2, 1, 32, 32, dtype=torch.uint8), top=2)
    >>> values.shape, indices.shape
    (torch.Size([2, 2]), torch.Size([2, 2]))
    """
    from convkit.models.reference import model_cfg

    cfg = model_cfg(model)
    x = cfg.normalize(images)
    logits = model(x).float()
    if cfg.tta:  # trained with flips: averaged with the mirror image, as evaluated in training
        logits = (logits + model(x.flip(-1)).float()) / 2
    probs = logits.softmax(1).cpu()
    return probs.topk(min(top, probs.shape[1]), dim=1)
