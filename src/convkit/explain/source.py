"""What the explain tools look at: a model with its normalisation, input shape and class names.

`load_explainable` turns anything that names a model (a run folder, a .safetensors checkpoint, a zoo name,
a model file, an ``nn.Module``) into an `Explainable`; `load_image` reads an image file the way the model
expects it; `conv_layers` and `find_layer` name the layers to look at.
"""

from __future__ import annotations

import contextlib
import difflib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from convkit.errors import ConvkitError
from convkit.models.reference import UNTRAINED_MEAN, UNTRAINED_STD  # noqa: F401  (0.5/0.5: see there)

__all__ = ["Explainable", "LayerError", "conv_layers", "eval_mode", "find_layer", "load_explainable", "load_image",
           "resolve_layer"]


class LayerError(ValueError, ConvkitError):
    """A layer name that the model does not have, or a model without the kind of layer asked for."""


@dataclass
class Explainable:
    """A model in eval mode with what explaining it needs.

    Attributes:
        model: the network, in eval mode.
        classes: class names, or None when the model was not trained by convkit (classes are then numbers).
        input_shape: (C, H, W) of one input image.
        mean, std: per-channel normalisation (C,) on the 0..1 scale: the model reads `(x / 255 - mean) / std`.
        run_dir: the run folder the weights come from, or None.
        name: a short name for file names and titles (the zoo name, the model file's stem...).

    Example:
        >>> ex = load_explainable(tiny_run)   # a run folder: convkit.train(epochs=1, limit=128).run_dir
        >>> ex.input_shape, ex.classes[:3], ex.name
        ((1, 28, 28), ['T-shirt/top', 'Trouser', 'Pullover'], 'fastcnn')
        >>> from PIL import Image
        >>> Image.fromarray(convkit.data.load_default("test").images[5, 0].numpy()).save("shoe.png")   # a sneaker
        >>> with torch.no_grad():
        ...     probs = ex.model(ex.normalize(load_image("shoe.png", ex.input_shape)[None])).softmax(1)
        >>> probs.shape, round(float(probs.sum()), 3)
        (torch.Size([1, 10]), 1.0)
        >>> ex.class_name(int(probs.argmax()))   # the best guess after one epoch on 128 images: it varies
        '...'
    """

    model: nn.Module
    classes: list[str] | None
    input_shape: tuple[int, int, int]
    mean: torch.Tensor
    std: torch.Tensor
    run_dir: Path | None = None
    name: str = "model"

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (or floats on 0..255), NCHW -> the model's input, `(x / 255 - mean) / std`.

        Computed as `Checkpoint.normalize` computes it (x * scale + shift), so results match `convkit predict`.
        """
        device = images.device
        scale = (1 / (255 * self.std)).to(device).view(1, -1, 1, 1)
        shift = (-self.mean / self.std).to(device).view(1, -1, 1, 1)
        return images.float() * scale + shift

    def denormalize(self, inputs: torch.Tensor) -> torch.Tensor:
        """The model's input, NCHW -> pixels on 0..1 (not clipped)."""
        return inputs * self.std.to(inputs.device).view(1, -1, 1, 1) + self.mean.to(inputs.device).view(1, -1, 1, 1)

    def to_uint8(self, inputs: torch.Tensor) -> torch.Tensor:
        """The model's input, NCHW -> uint8 images, clipped to 0..255."""
        return (self.denormalize(inputs) * 255).round().clamp(0, 255).to(torch.uint8)

    def class_name(self, index: int) -> str:
        """The name of class `index` ("class 3" when the model has no class names)."""
        if self.classes and 0 <= index < len(self.classes):
            return str(self.classes[index])
        return f"class {index}"

    def class_index(self, label: int | str) -> int:
        """A class given as an index or a name (as `--class` takes it) -> its index.

        Raises:
            ValueError: a name the model does not know, or an index out of range.
        """
        count = self.num_classes
        if isinstance(label, str) and not label.lstrip("-").isdigit():
            names = [str(c) for c in self.classes or []]
            if label in names:
                return names.index(label)
            close = difflib.get_close_matches(label, names, n=3, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            known = f"the model's classes: {', '.join(names)}" if names else "the model has no class names"
            raise ValueError(f"class {label!r}: no such class.{hint} Give an index 0..{count - 1} or a name; {known}")
        index = int(label)
        if not 0 <= index < count:
            raise ValueError(f"class {index}: out of range; the model has {count} classes (0..{count - 1})")
        return index

    @property
    def num_classes(self) -> int:
        """Outputs of the model (from its class names, else from one forward pass)."""
        if self.classes:
            return len(self.classes)
        with torch.no_grad():
            return int(self.model(self.normalize(torch.zeros(1, *self.input_shape))).shape[1])


def load_explainable(source, *, num_classes: int | None = None, in_channels: int | None = None,
                     input_shape: tuple[int, int, int] | None = None) -> Explainable:
    """Whatever names a model -> an `Explainable` (model in eval mode, normalisation, input shape, classes).

    The model comes from `convkit.models.resolve_model` (the one resolver of model references); the
    `Explainable` reads its `ModelCfg`.

    Args:
        source: a run folder or a .safetensors checkpoint (trained weights, classes and normalisation), a zoo
            name such as "resnet18" (untrained weights), a model file (.yaml/.yml), or an ``nn.Module``.
        num_classes, in_channels: the head and input channels of a zoo model or model file.
        input_shape: (C, H, W) to feed instead of the model's own (zoo default, model file, or training size).
            Required for an ``nn.Module`` that does not carry an ``input_shape`` attribute.

    Returns:
        An `Explainable`. Untrained models (zoo names, model files, modules) get mean 0.5 and std 0.5 per
        channel: they have seen no data, and 0.5/0.5 maps pixels onto -1..1 without claiming a dataset.

    Raises:
        UnknownModelError: an unknown zoo name; the message suggests close names.
        FileNotFoundError: a path that does not exist, or a folder without checkpoints.
        CheckpointError: a file that is not a convkit safetensors checkpoint (never unpickled).
        ModelFileError: a malformed model file.
        ValueError: num_classes/in_channels given for a trained checkpoint or a module; a module whose input
            shape nothing says.
        TypeError: a source of another type.

    Example:
        >>> ex = load_explainable("resnet18", num_classes=10, input_shape=(3, 64, 64))
        >>> ex.input_shape, ex.classes
        ((3, 64, 64), None)
    """
    from convkit.models.reference import resolve_model

    try:
        model = resolve_model(source, num_classes=num_classes, in_channels=in_channels, input_shape=input_shape)
    except (TypeError, ValueError) as err:
        if type(err) not in (TypeError, ValueError):
            raise  # a named convkit error (ModelFileError, CheckpointError...) says what it is itself
        raise type(err)(f"source: {err}") from None
    cfg = model.model_cfg
    if cfg.task not in (None, "classification"):
        from convkit.models._registry import ModelArgumentError

        raise ModelArgumentError(f"source: {source} is a {cfg.task} model; convkit explain works on classifiers "
                                 "(explain the backbone it was built on, e.g. its zoo name or the run it came from)")
    if cfg.input_shape is None:
        raise ValueError(f"source: cannot tell the input shape of {type(model).__name__}; pass input_shape=(C, H, W)")
    mean, std = cfg.mean_std()
    return Explainable(model.eval(), cfg.classes if cfg.trained else None, cfg.input_shape, mean, std, cfg.run_dir,
                       cfg.name)


def load_image(path: str | os.PathLike, input_shape: tuple[int, int, int]) -> torch.Tensor:
    """An image file of any mode -> uint8 (C, H, W) as the model expects it, the way `convkit predict` reads it.

    Grayscale, RGBA, palette, 16-bit and EXIF-rotated files become `input_shape`'s channels (alpha dropped,
    colour to luma or gray repeated) and size (bilinear, antialiased).

    Args:
        path: the image file.
        input_shape: (C, H, W) of the model's input.

    Returns:
        uint8 tensor of shape `input_shape`.

    Raises:
        DataFormatError: the file cannot be decoded; the message names it.

    Example:
        >>> from PIL import Image
        >>> Image.fromarray(convkit.data.load_default("test").images[5, 0].numpy()).save("shoe.png")   # gray 28x28
        >>> load_image("shoe.png", (1, 28, 28)).shape
        torch.Size([1, 28, 28])
        >>> image = load_image("shoe.png", (3, 32, 32))    # gray repeated to RGB, resized
        >>> image.shape, image.dtype
        (torch.Size([3, 32, 32]), torch.uint8)
    """
    from convkit.data.folder import decode_image
    from convkit.utils import fit_images

    c, h, w = input_shape
    # decode_image converts modes itself for 1, 3 or 4 channels (as predict does); fit_images covers the rest
    image = decode_image(path, channels=c if c in (1, 3, 4) else None, image_size=(h, w))
    return fit_images(image[None], tuple(input_shape))[0]


def conv_layers(model: nn.Module) -> list[str]:
    """Names (from `named_modules`) of the model's 2-D convolutions, in definition order.

    Example:
        >>> from convkit.models import create_model
        >>> conv_layers(create_model("lenet5"))
        ['features.c1', 'features.c3', 'features.c5']
    """
    return [name for name, module in model.named_modules() if name and isinstance(module, nn.Conv2d)]


def resolve_layer(model: nn.Module, name: str | None = None, *, default: str = "first") -> tuple[str, nn.Module]:
    """Like `find_layer`, returning the name with the module (the name chosen when `name` is None)."""
    if name is None:
        names = conv_layers(model)
        if not names:
            raise LayerError(f"{type(model).__name__} has no Conv2d layer; name a layer from named_modules()")
        if default not in {"first", "last"}:
            raise ValueError(f"default must be 'first' or 'last', got {default!r}")
        name = names[0] if default == "first" else names[-1]
        return name, model.get_submodule(name)
    modules = dict(model.named_modules())
    if name and name in modules:
        return name, modules[name]
    raise LayerError(_unknown_layer_message(model, name, modules))


def _unknown_layer_message(model: nn.Module, name: str, modules: dict) -> str:
    convs = conv_layers(model)
    close = difflib.get_close_matches(str(name), convs or [n for n in modules if n], n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    shown = convs if len(convs) <= 40 else [*convs[:20], "...", *convs[-19:]]
    listing = f"conv layers: {', '.join(shown)}" if convs else "it has no Conv2d layer"
    return (f"layer {name!r}: no such layer in {type(model).__name__}.{hint} Its {listing} (any name from "
            "model.named_modules() works)")


def find_layer(model: nn.Module, name: str | None = None, *, default: str = "first") -> nn.Module:
    """The submodule called `name` (as `named_modules` names it), or a conv layer when `name` is None.

    Args:
        model: the network.
        name: e.g. "features.c1" or "layer4.1.conv2"; None picks a conv layer.
        default: which conv layer None means: "first" (what filters shows) or "last" (Grad-CAM's usual layer).

    Returns:
        The module.

    Raises:
        LayerError: no such layer; the message lists the conv layers and suggests close names.

    Example:
        >>> from convkit.models import create_model
        >>> model = create_model("lenet5")
        >>> find_layer(model, "features.c3")
        Conv2d(6, 16, kernel_size=(5, 5), stride=(1, 1))
        >>> find_layer(model, default="last")     # no name: the last conv layer
        Conv2d(16, 120, kernel_size=(5, 5), stride=(1, 1))
        >>> find_layer(model, "c3")
        Traceback (most recent call last):
        ...
        convkit.explain.source.LayerError: layer 'c3': no such layer in LeNet5. Its conv layers: features.c1, ...
    """
    return resolve_layer(model, name, default=default)[1]


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Puts every module in eval mode (batch norm uses its running statistics, dropout is off) and gives each
    its own mode back afterwards, so explaining a model in the middle of training does not change it.

    Example:
        >>> from convkit.models import create_model
        >>> model = create_model("fastcnn")          # batch norm layers; a new model is in training mode
        >>> with eval_mode(model):
        ...     logits = model(torch.zeros(2, 1, 28, 28))
        ...     print(model.training, logits.shape)
        False torch.Size([2, 10])
        >>> model.training                          # its own mode back
        True
    """
    training = {m: m.training for m in model.modules()}
    try:
        model.eval()
        yield model
    finally:
        for m, mode in training.items():
            m.training = mode
