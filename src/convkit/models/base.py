"""The uniform interface of every zoo model, after timm's.

Every classifier in the zoo splits into a *body* that maps images to a feature map and a *head*
that maps the feature map to class scores::

    logits = model.forward_head(model.forward_features(images))

so that inspection, explanation (Grad-CAM needs the last feature map), transfer learning (swap the
head) and detection/segmentation backbones (keep the body) need no special case per model.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ClassifierNet", "pool_blocks", "spread_input_channels"]

_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.LPPool2d)


def spread_input_channels(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """A first convolution's weights for ``channels`` input channels: ``w'[:, j] = sum_c w[:, c] / channels``.

    3 -> 1 sums them, so a grey image gives what its 3-channel copy gave; 1 -> 3 replicates them divided by 3,
    so an RGB image with equal channels gives what the grey one gave. Used by foreign weights and fine-tuning.

    Args:
        weight: ``(out, in, kh, kw)`` convolution weights.
        channels: input channels wanted.

    Returns:
        A new ``(out, channels, kh, kw)`` tensor (no gradient history).

    Example:
        >>> spread_input_channels(torch.ones(2, 3, 1, 1), 1).flatten().tolist()
        [3.0, 3.0]
    """
    with torch.no_grad():
        return weight.sum(dim=1, keepdim=True).div(channels).repeat(1, channels, 1, 1)


def pool_blocks(container: nn.Module, prefix: str, stop: int | None = None,
                name: str = "block") -> list[tuple[str, list[str]]]:
    """Splits a container's children into blocks that end at each pooling layer (VGG's five blocks).

    Args:
        container: a module whose children run in order (``nn.Sequential``).
        prefix: the container's qualified name in the model (``"features"``), or ``""`` for the model itself.
        stop: only the first ``stop`` children.
        name: the blocks' names are ``name1``, ``name2``...

    Returns:
        ``(block name, [qualified child names])`` pairs, in order; a trailing part after the last pool is a
        block of its own, and blocks without parameters are merged into the next one (or the previous).

    >>> seq = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 8, 3), nn.MaxPool2d(2))
    >>> pool_blocks(seq, "features")
    [('block1', ['features.0', 'features.1', 'features.2']), ('block2', ['features.3', 'features.4'])]
    """
    children = list(container.named_children())[:stop]
    groups: list[list[tuple[str, nn.Module]]] = [[]]
    for child_name, child in children:
        groups[-1].append((child_name, child))
        if isinstance(child, _POOLS):
            groups.append([])
    merged: list[list[tuple[str, nn.Module]]] = []
    carry: list[tuple[str, nn.Module]] = []
    for group in groups:
        carry += group
        if any(True for _, m in carry for _ in m.parameters()):
            merged.append(carry)
            carry = []
    if carry and merged:
        merged[-1] += carry
    elif carry:
        merged.append(carry)
    dot = f"{prefix}." if prefix else ""
    return [(f"{name}{i}", [dot + n for n, _ in group]) for i, group in enumerate(merged, 1)]


class ClassifierNet(nn.Module):
    """Base class of the zoo's classifiers.

    Subclasses implement :meth:`forward_features` and :meth:`forward_head`, and set:

    * ``classifier_name``: dotted path of the final layer that maps features to classes
      (``"fc"``, ``"classifier.6"``); :meth:`reset_classifier` replaces that layer.
    * ``num_classes``: outputs of the head.
    * ``num_features``: channels of the feature map that :meth:`forward_features` returns.
    """

    classifier_name: str = "fc"
    num_classes: int
    num_features: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(N, C, H, W)`` -> the last feature map ``(N, num_features, h, w)``."""
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> class scores ``(N, num_classes)``; with ``pre_logits`` the classifier's input."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def stage_layout(self) -> list[tuple[str, list[str]]] | None:
        """The model's stages from input to output, head last: ``(stage name, [qualified module names])``.

        Used by :func:`convkit.reuse.model_stages` (freezing, per-stage learning rates), as timm's
        ``feature_info``. A parameter belongs to the stage whose module name is its longest prefix. ``None``
        (the default) lets convkit group the top-level children.
        """
        return None

    def get_classifier(self) -> nn.Module:
        """The final layer that maps features to classes."""
        return self.get_submodule(self.classifier_name)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final layer with a freshly initialised one for ``num_classes`` classes.

        ``num_classes=0`` replaces it with ``nn.Identity``, so the model returns the classifier's input
        (pooled features), as in timm. The new layer lives on the old one's device and dtype.

        >>> from convkit.models import create_model
        >>> model = create_model("resnet18")
        >>> model.reset_classifier(10)
        >>> model(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 10])
        """
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        old = self.get_classifier()
        if num_classes == 0:
            new: nn.Module = nn.Identity()
        elif isinstance(old, nn.Linear):
            new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
        elif isinstance(old, nn.Conv2d):  # NiN-style heads end in a convolution with one map per class
            new = nn.Conv2d(old.in_channels, num_classes, old.kernel_size, old.stride, old.padding,
                            bias=old.bias is not None)
        else:
            raise TypeError(f"cannot reset a classifier of type {type(old).__name__} at {self.classifier_name!r}")
        reference = next(old.parameters(), None)
        if reference is not None and num_classes:
            new = new.to(device=reference.device, dtype=reference.dtype)
        self.set_submodule(self.classifier_name, new)
        self.num_classes = num_classes
