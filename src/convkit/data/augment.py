"""Batched data augmentation on the training device, reproducible from a seed.

Every sample of a batch gets its own random parameters, drawn from one CPU `torch.Generator` (so a seed
gives the same augmentations on any device); the pixel work runs on the batch's device in a few tensor
operations: one affine matrix per sample through `F.affine_grid` + `F.grid_sample`, crops gathered by
indexing, masks built by comparison. Images are floats on the 0..255 scale (uint8 input is converted), so
`channel_shift` and fill values are in pixel units as in Keras' ImageDataGenerator; normalise afterwards.

Mixing (mixup, cutmix) returns `(images, labels_a, labels_b, lam)` with one `lam` per sample: the target of
sample i is `lam[i]` of class `labels_a[i]` and `1 - lam[i]` of class `labels_b[i]`; `mixed_cross_entropy`
computes the matching loss.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

# Keras' fill modes -> grid_sample's padding modes. Keras' "reflect" (abcd|dcba) is grid_sample's
# "reflection" with align_corners=False; "wrap" (abcd|abcd) has no padding mode and wraps the coordinates.
FILL_MODES = {"constant": "zeros", "nearest": "border", "reflect": "reflection", "wrap": "wrap"}
# The same modes for padding before a random crop (F.pad's names; "reflect" is torchvision's, dcb|abcd).
_PAD_MODES = {"constant": "constant", "nearest": "replicate", "reflect": "reflect", "wrap": "circular"}


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Moves random draws made on the CPU (for reproducibility) to the images' device without a wait.

    A copy from ordinary (pageable) host memory to a GPU first waits for everything queued on the GPU, which
    would stall every training step; from pinned memory it is queued like any other operation.
    """
    if t.device == device or device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=generator, dtype=torch.float64) * (high - low) + low


def _check_fill_mode(fill_mode: str) -> None:
    if fill_mode not in FILL_MODES:
        raise ValueError(f"fill_mode must be one of {', '.join(FILL_MODES)}, got {fill_mode!r}")


def affine_matrix(height: int, width: int, angle: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor,
                  shear: torch.Tensor | None = None, zoom_x: torch.Tensor | None = None,
                  zoom_y: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample matrices for `F.affine_grid` that move image content as described, about the centre.

    The content is zoomed, sheared, rotated, then shifted: a point at (x, y) pixels from the centre
    (x right, y down) goes to `R(angle) @ Shear(shear) @ diag(zoom_x, zoom_y) @ (x, y) + (tx, ty)`.

    Args:
        height, width: the image size.
        angle: degrees, counter-clockwise as displayed (as torch.rot90 and torchvision), shape (N,).
        tx, ty: shift in pixels, positive = right / down (as torch.roll), shape (N,).
        shear: degrees; x moves by tan(shear) * y. Zero when None.
        zoom_x, zoom_y: scale factors, > 1 enlarges the content. One when None.

    Returns:
        float32 (N, 2, 3): output -> input sampling matrices in affine_grid's normalised coordinates.

    Example:
        >>> images = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
        >>> theta = affine_matrix(4, 4, torch.tensor([90.0]), torch.zeros(1), torch.zeros(1))
        >>> out = warp(images, theta)
        >>> torch.allclose(out, torch.rot90(images, 1, dims=(2, 3)).float(), atol=1e-4)   # up to rounding
        True
    """
    angle = torch.deg2rad(torch.as_tensor(angle, dtype=torch.float64))
    n = len(angle)
    one, zero = torch.ones(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    shear = torch.deg2rad(torch.as_tensor(shear, dtype=torch.float64)) if shear is not None else zero
    zx = torch.as_tensor(zoom_x, dtype=torch.float64) if zoom_x is not None else one
    zy = torch.as_tensor(zoom_y, dtype=torch.float64) if zoom_y is not None else one
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotate = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # y points down
    shear_m = torch.stack([torch.stack([one, torch.tan(shear)], -1), torch.stack([zero, one], -1)], -2)
    forward = rotate @ shear_m @ torch.diag_embed(torch.stack([zx, zy], -1))
    inverse = torch.linalg.inv(forward)  # grid_sample asks, for each output pixel, where to read the input
    t = torch.stack([torch.as_tensor(tx, dtype=torch.float64), torch.as_tensor(ty, dtype=torch.float64)], -1)
    # Pixels -> affine_grid's coordinates, in which the image spans [-1, 1] on both axes.
    half = torch.tensor([width / 2, height / 2], dtype=torch.float64)
    linear = inverse * half.view(1, 1, 2) / half.view(1, 2, 1)
    shift = -(inverse @ t.unsqueeze(-1)).squeeze(-1) / half
    return torch.cat([linear, shift.unsqueeze(-1)], -1).float()


def warp(images: torch.Tensor, theta: torch.Tensor, fill_mode: str = "nearest", fill_value: float = 0.0) -> torch.Tensor:
    """Applies one affine matrix per image (bilinear), filling the area from outside the image per `fill_mode`.

    Images whose matrix is the identity are returned untouched (bit for bit), not resampled.

    Args:
        images: (N, C, H, W), uint8 or float.
        theta: (N, 2, 3) from `affine_matrix`.
        fill_mode: "constant" (fill_value), "nearest" (edge pixels repeated), "reflect" (mirrored at the
            edge, abcd|dcba) or "wrap" (the opposite edge, abcd|abcd).
        fill_value: the constant, on the images' scale.

    Returns:
        float32 images (N, C, H, W) on the images' device.

    Example:
        >>> images = torch.arange(16.0).view(1, 1, 4, 4)
        >>> theta = affine_matrix(4, 4, torch.zeros(1), tx=torch.tensor([1.0]), ty=torch.zeros(1))
        >>> warp(images, theta, "reflect")        # one pixel right; the left column is mirrored in
        tensor([[[[ 0.,  0.,  1.,  2.],
                  [ 4.,  4.,  5.,  6.],
                  [ 8.,  8.,  9., 10.],
                  [12., 12., 13., 14.]]]])
    """
    _check_fill_mode(fill_mode)
    x = images.float()
    n, c, h, w = x.shape
    theta = to_device(theta.to(torch.float32), x.device)
    identity = torch.eye(2, 3, device=x.device).expand_as(theta)
    moving = (theta - identity).abs().flatten(1).amax(1) > 1e-7
    if not bool(moving.any()):
        return x
    src, t = x[moving], theta[moving]
    grid = F.affine_grid(t, [len(t), c, h, w], align_corners=False)
    if fill_mode == "wrap":
        # Wrap the coordinates into the image, and pad one pixel circularly so that interpolation across the
        # seam mixes the two opposite edges; the grid is rescaled to the padded image's coordinates.
        grid = torch.remainder(grid + 1, 2) - 1
        grid = grid * torch.tensor([w / (w + 2), h / (h + 2)], device=x.device)
        out = F.grid_sample(F.pad(src, (1, 1, 1, 1), mode="circular"), grid, padding_mode="border",
                            align_corners=False)
    else:
        out = F.grid_sample(src, grid, padding_mode=FILL_MODES[fill_mode], align_corners=False)
        if fill_mode == "constant" and fill_value != 0:
            # grid_sample fills with zeros only; warping a ones mask tells how much of each pixel was outside.
            inside = F.grid_sample(torch.ones_like(src[:, :1]), grid, padding_mode="zeros", align_corners=False)
            out = out + (1 - inside) * fill_value
    x = x.clone()
    x[moving] = out
    return x


def random_flip(images: torch.Tensor, horizontal: bool = True, vertical: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Flips each image with probability 1/2, left-right and/or up-down (exactly, with torch.flip).

    Example:
        >>> images = torch.arange(6).view(2, 1, 1, 3)
        >>> random_flip(images, horizontal=True, generator=torch.Generator().manual_seed(0)).flatten(1)
        tensor([[2, 1, 0],
                [3, 4, 5]])
    """
    x = images
    for flag, dim in ((horizontal, -1), (vertical, -2)):
        if flag:
            mask = to_device(torch.rand(len(x), generator=generator) < 0.5, x.device).view(-1, 1, 1, 1)
            x = torch.where(mask, x.flip(dim), x)
    return x


def random_affine(images: torch.Tensor, *, rotation: float = 0.0, width_shift: float = 0.0,
                  height_shift: float = 0.0, shear: float = 0.0, zoom: float | tuple[float, float] = 0.0,
                  fill_mode: str = "nearest", fill_value: float = 0.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Random rotation, shifts, shear and zoom, one draw per image, as Keras' ImageDataGenerator offers them.

    Args:
        images: (N, C, H, W).
        rotation: degrees; angles uniform in [-rotation, rotation].
        width_shift, height_shift: fractions of the width/height (< 1) or pixels (>= 1); uniform in [-s, s].
        shear: degrees; uniform in [-shear, shear].
        zoom: factors uniform in [1 - zoom, 1 + zoom], or a (low, high) pair; drawn separately for x and y.
        fill_mode, fill_value: as in `warp`.
        generator: the random source (CPU).

    Returns:
        float32 images.

    Example:
        >>> images, g = torch.zeros(8, 3, 32, 32, dtype=torch.uint8), torch.Generator().manual_seed(0)
        >>> out = random_affine(images, rotation=10, width_shift=0.1, zoom=0.1, generator=g)
        >>> out.shape, out.dtype
        (torch.Size([8, 3, 32, 32]), torch.float32)
    """
    n, _, h, w = images.shape
    low, high = (1 - zoom, 1 + zoom) if isinstance(zoom, int | float) else zoom
    sx = width_shift * w if width_shift < 1 else width_shift
    sy = height_shift * h if height_shift < 1 else height_shift
    theta = affine_matrix(h, w, _uniform(n, -rotation, rotation, generator), _uniform(n, -sx, sx, generator),
                          _uniform(n, -sy, sy, generator), _uniform(n, -shear, shear, generator),
                          _uniform(n, low, high, generator), _uniform(n, low, high, generator))
    return warp(images, theta, fill_mode, fill_value)


def channel_shift(images: torch.Tensor, intensity: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Adds a random offset, uniform in [-intensity, intensity], to each channel of each image; clips to 0..255.

    Example:
        >>> images, g = torch.full((2, 3, 4, 4), 100.0), torch.Generator().manual_seed(0)
        >>> channel_shift(images, 20.0, generator=g)[:, :, 0, 0]     # one offset per image and channel
        tensor([[ 99.8503, 110.7289,  83.5391],
                [ 85.2812,  92.2969, 105.3631]])
    """
    n, c = images.shape[:2]
    shift = (torch.rand(n, c, 1, 1, generator=generator) * 2 - 1) * intensity
    return (images.float() + to_device(shift, images.device)).clamp(0, 255)


def random_crop(images: torch.Tensor, padding: int, fill_mode: str = "constant", fill_value: float = 0.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Pads each side by `padding` pixels, then takes a crop of the original size at a random offset per image.

    Args:
        images: (N, C, H, W).
        padding: pixels added on each side (the crop moves by up to this much).
        fill_mode: "constant", "nearest" (edge repeated), "reflect" (dcb|abcd, as torchvision) or "wrap".
        fill_value: the constant for "constant".
        generator: the random source.

    Returns:
        Images of the input's shape and dtype.

    Example:
        >>> images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
        >>> g = torch.Generator().manual_seed(0)
        >>> out = random_crop(images, 4, generator=g)   # CIFAR's classic "pad 4, crop 32"
        >>> out.shape, out.dtype
        (torch.Size([8, 3, 32, 32]), torch.uint8)
    """
    if padding == 0:
        return images
    n, c, h, w = images.shape
    x = images.float() if fill_mode in ("reflect", "nearest") and not images.is_floating_point() else images
    pad = (padding,) * 4
    padded = F.pad(x, pad, value=fill_value) if fill_mode == "constant" else F.pad(x, pad, mode=_PAD_MODES[fill_mode])
    dev = images.device
    oy = to_device(torch.randint(0, 2 * padding + 1, (n,), generator=generator), dev)
    ox = to_device(torch.randint(0, 2 * padding + 1, (n,), generator=generator), dev)
    rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :]
    out = padded[torch.arange(n, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                 rows, cols]
    return out.to(images.dtype)


def random_erasing(images: torch.Tensor, p: float = 0.5, scale: tuple[float, float] = (0.02, 0.33),
                   ratio: tuple[float, float] = (0.3, 3.3), value: float | str = 0.0,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Random erasing (Zhong et al., 2017): with probability p, a random rectangle of each image is filled.

    Args:
        images: (N, C, H, W).
        p: the probability that an image gets a rectangle.
        scale: the rectangle's area as a fraction of the image, uniform in this range.
        ratio: its aspect ratio height/width, log-uniform in this range (clipped to fit the image).
        value: the fill on the images' scale, or "random" for uniform noise in 0..255.
        generator: the random source.

    Returns:
        float32 images; outside the rectangles they equal the input.

    Example:
        >>> images, g = torch.full((8, 1, 28, 28), 255.0), torch.Generator().manual_seed(0)
        >>> out = random_erasing(images, p=0.5, generator=g)
        >>> (out != 255).flatten(1).any(1)           # which images got a rectangle
        tensor([False,  True, False, False, False, False,  True,  True])
    """
    x = images.float()
    n, c, h, w = x.shape
    area = _uniform(n, *scale, generator) * h * w
    r = torch.exp(_uniform(n, math.log(ratio[0]), math.log(ratio[1]), generator))
    eh = torch.sqrt(area * r).round().clamp(1, h)
    ew = torch.sqrt(area / r).round().clamp(1, w)
    y0 = (torch.rand(n, generator=generator, dtype=torch.float64) * (h - eh + 1)).floor()
    x0 = (torch.rand(n, generator=generator, dtype=torch.float64) * (w - ew + 1)).floor()
    on = torch.rand(n, generator=generator) < p
    mask = _box_mask(h, w, y0, x0, y0 + eh, x0 + ew) & on.view(-1, 1, 1, 1)
    if value == "random":
        fill = torch.randint(0, 256, x.shape, generator=generator).float()
    else:
        fill = torch.tensor(float(value))
    return torch.where(to_device(mask, x.device), to_device(fill, x.device), x)


def _box_mask(h: int, w: int, y0: torch.Tensor, x0: torch.Tensor, y1: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) bool: True inside each sample's box [y0, y1) x [x0, x1)."""
    ys = torch.arange(h, dtype=torch.float64).view(1, h, 1)
    xs = torch.arange(w, dtype=torch.float64).view(1, 1, w)
    v = lambda t: t.view(-1, 1, 1)  # noqa: E731
    return ((ys >= v(y0)) & (ys < v(y1)) & (xs >= v(x0)) & (xs < v(x1))).unsqueeze(1)


def _beta(alpha: float, n: int, generator: torch.Generator | None) -> torch.Tensor:
    # torch's Beta distribution takes no generator; a numpy Generator seeded from ours keeps runs reproducible.
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.from_numpy(np.random.default_rng(seed).beta(alpha, alpha, n))


def mixup(images: torch.Tensor, labels: torch.Tensor, alpha: float = 0.2,
          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """mixup (Zhang et al., 2018): each image is blended with another of the batch, lam ~ Beta(alpha, alpha).

    Args:
        images: (N, C, H, W).
        labels: (N,) class indices.
        alpha: the Beta distribution's parameter.
        generator: the random source.

    Returns:
        (float images, labels_a, labels_b, lam of shape (N,)): image i is
        `lam[i] * images[i] + (1 - lam[i]) * images[j]`, labels_a[i] = labels[i], labels_b[i] = labels[j].

    Example:
        >>> images, labels = torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.tensor([0, 1, 2, 3])
        >>> x, ya, yb, lam = mixup(images, labels, 0.2, generator=torch.Generator().manual_seed(0))
        >>> ya, yb, lam.round(decimals=2)        # x[i] = lam[i] * images[i] + (1 - lam[i]) * images[yb[i]]
        (tensor([0, 1, 2, 3]), tensor([0, 1, 3, 2]), tensor([0.3500, 0.9900, 0.0000, 0.0200]))
        >>> loss = mixed_cross_entropy(convkit.create_model("fastcnn")(x), ya, yb, lam)
    """
    x = images.float()
    perm = to_device(torch.randperm(len(x), generator=generator), x.device)
    lam = to_device(_beta(alpha, len(x), generator).float(), x.device)
    lw = lam.view(-1, 1, 1, 1)
    return lw * x + (1 - lw) * x[perm], labels, labels[perm], lam


def cutmix(images: torch.Tensor, labels: torch.Tensor, alpha: float = 1.0,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """CutMix (Yun et al., 2019): a box of each image is replaced by the same box of another image.

    The box has area about (1 - lam0) of the image, lam0 ~ Beta(alpha, alpha), centred at random and
    clipped to the image; the returned lam is the exact share of the image left unchanged.

    Args:
        images: (N, C, H, W).
        labels: (N,) class indices.
        alpha: the Beta distribution's parameter.
        generator: the random source.

    Returns:
        (float images, labels_a, labels_b, lam of shape (N,)), as in `mixup`.

    Example:
        >>> images, labels = torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.tensor([0, 1, 2, 3])
        >>> x, ya, yb, lam = cutmix(images, labels, 1.0, generator=torch.Generator().manual_seed(0))
        >>> yb, lam                                  # lam: the share of each image kept
        (tensor([0, 1, 3, 2]), tensor([0.6365, 0.8571, 0.4694, 0.6173]))
    """
    x = images.float()
    n, _, h, w = x.shape
    perm = torch.randperm(n, generator=generator)
    cut = torch.sqrt(1 - _beta(alpha, n, generator))
    ch, cw = (cut * h).floor(), (cut * w).floor()
    cy = torch.randint(0, h, (n,), generator=generator).double()
    cx = torch.randint(0, w, (n,), generator=generator).double()
    y0, y1 = (cy - ch // 2).clamp(0, h), (cy + ch // 2).clamp(0, h)
    x0, x1 = (cx - cw // 2).clamp(0, w), (cx + cw // 2).clamp(0, w)
    lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    mask = to_device(_box_mask(h, w, y0, x0, y1, x1), x.device)
    perm = to_device(perm, x.device)
    return torch.where(mask, x[perm], x), labels, labels[perm], to_device(lam.float(), x.device)


def mixed_cross_entropy(logits: torch.Tensor, labels_a: torch.Tensor, labels_b: torch.Tensor, lam: torch.Tensor,
                        label_smoothing: float = 0.0) -> torch.Tensor:
    """The cross-entropy of mixed targets: mean of `lam * CE(labels_a) + (1 - lam) * CE(labels_b)`.

    With lam all ones (no mixing) it equals `F.cross_entropy(logits, labels_a)`.

    Example:
        >>> logits, labels = torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 1])
        >>> mixed_cross_entropy(logits, labels, labels.flip(0), torch.tensor([1.0, 1.0]))   # no mixing
        tensor(0.1269)
        >>> F.cross_entropy(logits, labels)
        tensor(0.1269)
        >>> mixed_cross_entropy(logits, labels, labels.flip(0), torch.tensor([0.5, 0.5]))   # half each
        tensor(1.1269)
    """
    ce_a = F.cross_entropy(logits, labels_a, reduction="none", label_smoothing=label_smoothing)
    ce_b = F.cross_entropy(logits, labels_b, reduction="none", label_smoothing=label_smoothing)
    lam = lam.to(ce_a.dtype)
    return (lam * ce_a + (1 - lam) * ce_b).mean()


@dataclass
class AugmentConfig:
    """What to augment, in Keras ImageDataGenerator's terms plus crops, erasing and mixing. Zero = off.

    Args:
        rotation: degrees (uniform in ±rotation).
        width_shift, height_shift: fraction of the size (< 1) or pixels (>= 1).
        shear: degrees.
        zoom: ± fraction, or a (low, high) pair of factors.
        horizontal_flip, vertical_flip: flip half of the images.
        channel_shift: ± pixel units per channel.
        fill_mode: "nearest", "constant", "reflect" or "wrap", for the affine and the crop padding.
        fill_value: the constant of "constant" (pixel units).
        crop_padding: random crop of the original size after padding this many pixels.
        erasing: probability of random erasing per image.
        mixup: mixup's alpha; cutmix: cutmix's alpha. With both, each batch uses one of them at random.

    Example:
        >>> config = AugmentConfig(rotation=10, width_shift=0.1, horizontal_flip=True, crop_padding=4)
        >>> config.affine, Augmenter(config)
        (True, Augmenter(rotation=10, width_shift=0.1, horizontal_flip=True, crop_padding=4))
    """

    rotation: float = 0.0
    width_shift: float = 0.0
    height_shift: float = 0.0
    shear: float = 0.0
    zoom: float | tuple[float, float] = 0.0
    horizontal_flip: bool = False
    vertical_flip: bool = False
    channel_shift: float = 0.0
    fill_mode: str = "nearest"
    fill_value: float = 0.0
    crop_padding: int = 0
    erasing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0

    def __post_init__(self):
        _check_fill_mode(self.fill_mode)

    @property
    def affine(self) -> bool:
        """Whether any of rotation, shifts, shear or zoom is on (else the affine warp is skipped)."""
        return any([self.rotation, self.width_shift, self.height_shift, self.shear, self.zoom not in (0, 0.0, (1, 1))])


class Augmenter:
    """Applies an `AugmentConfig` to batches, reproducibly: same seed, same batches -> same output.

    Order: random crop, flips, affine, channel shift, erasing, then mixup or cutmix.

    Args:
        config: an AugmentConfig (or keyword arguments for one).
        seed: seeds the Augmenter's own CPU generator; save `state_dict()` to resume exactly.

    Example:
        >>> augment = Augmenter(AugmentConfig(rotation=10, horizontal_flip=True, mixup=0.2), seed=0)
        >>> ds = convkit.data.load_default("test")
        >>> images, labels = ds.images[:64], ds.labels[:64]
        >>> x, ya, yb, lam = augment(images, labels)     # x: float 0..255 on the images' device
        >>> x.dtype, x.shape, float(x.min()) >= 0, float(x.max()) <= 255
        (torch.float32, torch.Size([64, 1, 28, 28]), True, True)
        >>> loss = mixed_cross_entropy(convkit.create_model("fastcnn")(ds.normalize(x)), ya, yb, lam)
    """

    def __init__(self, config: AugmentConfig | None = None, seed: int = 0, **kwargs):
        self.config = config or AugmentConfig(**kwargs)
        self.generator = torch.Generator().manual_seed(seed)

    def __repr__(self) -> str:
        on = {k: v for k, v in asdict(self.config).items() if v and k not in ("fill_mode", "fill_value")}
        return f"Augmenter({', '.join(f'{k}={v}' for k, v in on.items()) or 'nothing'})"

    def __call__(self, images: torch.Tensor,
                 labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Augments a batch.

        Args:
            images: (N, C, H, W), uint8 or float on the 0..255 scale.
            labels: (N,) class indices.

        Returns:
            (float32 images, labels_a, labels_b, lam (N,)); without mixing labels_b = labels_a and lam = 1.
        """
        c, g = self.config, self.generator
        x = random_crop(images, c.crop_padding, c.fill_mode, c.fill_value, g).float()
        x = random_flip(x, c.horizontal_flip, c.vertical_flip, g)
        if c.affine:
            x = random_affine(x, rotation=c.rotation, width_shift=c.width_shift, height_shift=c.height_shift,
                              shear=c.shear, zoom=c.zoom, fill_mode=c.fill_mode, fill_value=c.fill_value, generator=g)
        if c.channel_shift:
            x = channel_shift(x, c.channel_shift, g)
        if c.erasing:
            x = random_erasing(x, c.erasing, generator=g)
        use_cutmix = c.cutmix > 0 and (c.mixup <= 0 or bool(torch.rand(1, generator=g) < 0.5))
        if use_cutmix:
            return cutmix(x, labels, c.cutmix, g)
        if c.mixup > 0:
            return mixup(x, labels, c.mixup, g)
        return x, labels, labels, torch.ones(len(x), device=x.device)

    def state_dict(self) -> dict:
        """The generator's state, to save with a checkpoint."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restores the generator's state saved by `state_dict`."""
        self.generator.set_state(state["generator"])
