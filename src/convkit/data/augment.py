"""Batched data augmentation on the training device, reproducible from a seed.

Every sample of a batch gets its own random parameters, drawn from one CPU `torch.Generator` (so a seed
gives the same augmentations on any device); the pixel work runs on the batch's device in a few tensor
operations: one affine matrix per sample through `F.affine_grid` + `F.grid_sample`, crops gathered by
indexing, masks built by comparison. Images are floats on the 0..255 scale (uint8 input is converted), so
`channel_shift` and fill values are in pixel units as in Keras' ImageDataGenerator; normalise afterwards.

Mixing (mixup, cutmix) returns `(images, labels_a, labels_b, lam)` with one `lam` per sample: the target of
sample i is `lam[i]` of class `labels_a[i]` and `1 - lam[i]` of class `labels_b[i]`; `mixed_cross_entropy`
computes the matching loss.

Segmentation masks and detection boxes move with their images (`Augmenter.with_targets`, `warp_masks`,
`warp_boxes`): the same crop offsets, flip flags and affine matrices move them; masks by nearest neighbour
(labels are never blended), `ignore_index` where pixels come from outside the image; boxes (pixel xyxy) as the
enclosing box of their moved corners, clipped to the image, dropped when pushed out, with the indices kept.
For detection, `Augmenter.detection` takes convkit's target dicts and adds mosaic (`mosaic`, YOLOv4's 4 images
around a random centre, exact pixel copies) and aspect-keeping scale-jitter (`AugmentConfig.scale_jitter`);
labels, crowd flags and instance masks follow their boxes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from convkit.errors import ConvkitError
from convkit.utils import shorten

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
                  zoom_y: torch.Tensor | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Per-sample matrices for `F.affine_grid` that move image content as described, about the centre.

    The content is zoomed, sheared, rotated, then shifted: a point at (x, y) pixels from the centre
    (x right, y down) goes to `R(angle) @ Shear(shear) @ diag(zoom_x, zoom_y) @ (x, y) + (tx, ty)`.

    Args:
        height, width: the image size.
        angle: degrees, counter-clockwise as displayed (as torch.rot90 and torchvision), shape (N,).
        tx, ty: shift in pixels, positive = right / down (as torch.roll), shape (N,).
        shear: degrees; x moves by tan(shear) * y. Zero when None.
        zoom_x, zoom_y: scale factors, > 1 enlarges the content. One when None.
        dtype: of the result; computed in float64 (float64 keeps boxes moved by `warp_boxes` exact).

    Returns:
        (N, 2, 3): output -> input sampling matrices in affine_grid's normalised coordinates.

    Example:
        >>> images = torch.rand(1, 3, 28, 28) * 255
        >>> theta = affine_matrix(28, 28, torch.tensor([90.0]), torch.zeros(1), torch.zeros(1))
        >>> torch.allclose(warp(images, theta), torch.rot90(images, 1, dims=(2, 3)), atol=1e-2)
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
    return torch.cat([linear, shift.unsqueeze(-1)], -1).to(dtype)


def warp(images: torch.Tensor, theta: torch.Tensor, fill_mode: str = "nearest", fill_value: float = 0.0,
         mode: str = "bilinear") -> torch.Tensor:
    """Applies one affine matrix per image (bilinear), filling the area from outside the image per `fill_mode`.

    Images whose matrix is the identity are returned untouched (bit for bit), not resampled.

    Args:
        images: (N, C, H, W), uint8 or float.
        theta: (N, 2, 3) from `affine_matrix`.
        fill_mode: "constant" (fill_value), "nearest" (edge pixels repeated), "reflect" (mirrored at the
            edge, abcd|dcba) or "wrap" (the opposite edge, abcd|abcd).
        fill_value: the constant, on the images' scale.
        mode: grid_sample's interpolation, "bilinear" or "nearest" (each output pixel copies the input pixel
            that `warp_masks` reads for it).

    Returns:
        float32 images (N, C, H, W) on the images' device.

    Example:
        >>> images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
        >>> angles, tx, ty = torch.full((8,), 15.0), torch.zeros(8), torch.ones(8)
        >>> warp(images, affine_matrix(32, 32, angles, tx, ty), "reflect").shape
        torch.Size([8, 3, 32, 32])
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
        out = F.grid_sample(F.pad(src, (1, 1, 1, 1), mode="circular"), grid, mode, padding_mode="border",
                            align_corners=False)
    else:
        out = F.grid_sample(src, grid, mode, padding_mode=FILL_MODES[fill_mode], align_corners=False)
        if fill_mode == "constant" and fill_value != 0:
            # grid_sample fills with zeros only; warping a ones mask tells how much of each pixel was outside.
            inside = F.grid_sample(torch.ones_like(src[:, :1]), grid, mode, padding_mode="zeros",
                                   align_corners=False)
            out = out + (1 - inside) * fill_value
    x = x.clone()
    x[moving] = out
    return x


def warp_masks(masks: torch.Tensor, theta: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Moves integer label maps with their images: a matrix per mask, by nearest neighbour, never blended.

    Each output pixel copies the input pixel that `warp(..., mode="nearest")` reads for it with the same
    matrix; pixels that come from outside the mask get `ignore_index`. Masks whose matrix is the identity
    are returned untouched.

    Args:
        masks: (N, H, W) integer label maps (uint8, int64, ...).
        theta: (N, 2, 3) from `affine_matrix`, the images' matrices.
        ignore_index: the label of pixels from outside (as in `F.cross_entropy(..., ignore_index=)`).

    Returns:
        (N, H, W) label maps of the masks' dtype and device.

    Raises:
        ValueError: if the masks are not (N, H, W) integers.

    Example:
        >>> mask = torch.tensor([[[1, 2], [3, 4]]], dtype=torch.uint8)
        >>> warp_masks(mask, affine_matrix(2, 2, torch.tensor([90.0]), torch.zeros(1), torch.zeros(1)))
        tensor([[[2, 4],
                 [1, 3]]], dtype=torch.uint8)
    """
    _check_masks(masks)
    n, h, w = masks.shape
    dev = masks.device
    theta = to_device(theta.to(torch.float32), dev)
    moving = (theta - torch.eye(2, 3, device=dev).expand_as(theta)).abs().flatten(1).amax(1) > 1e-7
    if not bool(moving.any()):
        return masks
    t = theta[moving]
    m = len(t)
    # Sample where each output pixel reads from: an "inside" channel and the source row and column (exact
    # in float32), then gather the labels themselves, so that any integer dtype passes through unchanged.
    rows = torch.arange(h, device=dev, dtype=torch.float32).view(1, 1, h, 1).expand(m, 1, h, w)
    cols = torch.arange(w, device=dev, dtype=torch.float32).view(1, 1, 1, w).expand(m, 1, h, w)
    src = torch.cat([torch.ones_like(rows), rows, cols], 1)
    grid = F.affine_grid(t, [m, 1, h, w], align_corners=False)
    read = F.grid_sample(src, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    inside = read[:, 0] > 0.5
    labels = masks[moving][torch.arange(m, device=dev).view(-1, 1, 1), read[:, 1].long(), read[:, 2].long()]
    out = masks.clone()
    out[moving] = labels.masked_fill(~inside, ignore_index)
    return out


def warp_boxes(boxes: list[torch.Tensor], theta: torch.Tensor, height: int, width: int,
               min_visibility: float = 0.0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Moves bounding boxes with their images: the enclosing box of each moved box, clipped to the image.

    The 4 corners of each box go through the image's matrix (as `warp` moves the content), the axis-aligned
    box around them is clipped to the image, and boxes left under 1 pixel wide or high, or with less than
    `min_visibility` of the enclosing box's area inside the image, are dropped.

    Args:
        boxes: N float tensors (M_i, 4), pixel xyxy (x right, y down, x2 and y2 the exclusive edges, as
            COCO and torchvision), one per image.
        theta: (N, 2, 3) from `affine_matrix`, the images' matrices (float64 gives exact shifts and flips).
        height, width: the image size.
        min_visibility: the least fraction of a moved box's area that must stay inside the image.

    Returns:
        (boxes, kept): N tensors (K_i, 4) of the boxes' dtype, and N int64 tensors (K_i,) of the indices into
        `boxes[i]` of the boxes kept, in order, so that their labels can follow (`labels[i][kept[i]]`).

    Raises:
        ValueError: if there are not N boxes tensors of shape (M_i, 4).

    Example:
        >>> theta = affine_matrix(8, 8, torch.zeros(1), torch.tensor([4.0]), torch.zeros(1))   # 4 px right
        >>> warp_boxes([torch.tensor([[1.0, 1.0, 3.0, 3.0], [5.0, 0.0, 7.0, 2.0]])], theta, 8, 8)
        ([tensor([[5., 1., 7., 3.]])], [tensor([0])])
    """
    moved = _Boxes(boxes, len(theta))
    moved.move(_pixel_matrices(theta, height, width), height, width)
    return moved.result(min_visibility)


def _pixel_matrices(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """float64 (N, 2, 3) matrices that move a point of the input, in pixels, to where `warp` shows it."""
    t = theta.to(torch.float64)
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64, device=t.device).expand(len(t), 1, 3)
    to_grid = torch.tensor([[2 / width, 0, -1], [0, 2 / height, -1], [0, 0, 1]], dtype=torch.float64,
                           device=t.device)
    to_pixels = torch.tensor([[width / 2, 0, width / 2], [0, height / 2, height / 2], [0, 0, 1]],
                             dtype=torch.float64, device=t.device)
    return (to_pixels @ torch.linalg.inv(torch.cat([t, bottom], 1)) @ to_grid)[:, :2]


def _check_masks(masks: torch.Tensor, shape: tuple[int, ...] | None = None) -> None:
    if masks.is_floating_point() or masks.is_complex() or masks.dtype == torch.bool or masks.dim() != 3:
        raise ValueError(f"masks must be (N, H, W) integer label maps, got {masks.dtype} "
                         f"{tuple(masks.shape)}")
    if shape is not None and tuple(masks.shape) != shape:
        raise ValueError(f"masks must be (N, H, W) = {shape} like the images, got {tuple(masks.shape)}")


class _Boxes:
    """The boxes of a batch as one (M, 4) float64 tensor, moved step by step with their images.

    `visible` is the part inside the image after each step (what a clipped crop or warp left), `whole` the
    box moved without clipping (for `min_visibility`); `owner` and `index` say whose box each row is.
    """

    def __init__(self, boxes: list[torch.Tensor], n: int):
        if len(boxes) != n or any(b.dim() != 2 or b.shape[-1] != 4 for b in boxes):
            raise ValueError(f"boxes must be {n} tensors (M_i, 4), one per image, got "
                             f"{[tuple(b.shape) for b in boxes]}")
        self.dtype = boxes[0].dtype if n and boxes[0].is_floating_point() else torch.float32
        dev = boxes[0].device if n else torch.device("cpu")
        sizes = torch.tensor([len(b) for b in boxes], device=dev)
        self.n = n
        empty = torch.zeros(0, 4, dtype=torch.float64)
        self.visible = torch.cat([b.to(dev, torch.float64) for b in boxes]) if n else empty
        self.whole = self.visible
        self.owner = torch.repeat_interleave(torch.arange(n, device=dev), sizes)
        self.index = torch.cat([torch.arange(len(b), device=dev) for b in boxes]) if n else self.owner

    @staticmethod
    def _enclose(b: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        x, y = b[:, [0, 2, 0, 2]], b[:, [1, 1, 3, 3]]  # the 4 corners
        mx = m[:, 0, :1] * x + m[:, 0, 1:2] * y + m[:, 0, 2:]
        my = m[:, 1, :1] * x + m[:, 1, 1:2] * y + m[:, 1, 2:]
        return torch.stack([mx.amin(1), my.amin(1), mx.amax(1), my.amax(1)], 1)

    def _keep(self, keep: torch.Tensor) -> None:
        self.visible, self.whole = self.visible[keep], self.whole[keep]
        self.owner, self.index = self.owner[keep], self.index[keep]

    def move(self, matrix: torch.Tensor, height: int, width: int) -> None:
        """Moves the boxes by per-image (N, 2, 3) pixel matrices, clips them, drops those under 1 px."""
        m = matrix.to(self.visible.device, torch.float64)[self.owner]
        limit = torch.tensor([width, height, width, height], dtype=torch.float64, device=m.device)
        self.visible = torch.minimum(self._enclose(self.visible, m).clamp(min=0), limit)
        self.whole = self._enclose(self.whole, m)
        self._keep((self.visible[:, 2:] - self.visible[:, :2] >= 1 - 1e-6).all(1))

    def result(self, min_visibility: float) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(boxes, kept) per image, dropping boxes with less than `min_visibility` of their area inside."""
        if min_visibility > 0:
            area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
            self._keep(area(self.visible) >= min_visibility * area(self.whole) - 1e-9)
        counts = torch.bincount(self.owner, minlength=self.n).tolist()
        return list(self.visible.to(self.dtype).split(counts)), list(self.index.split(counts))


def _flip_flags(n: int, horizontal: bool, vertical: bool,
                generator: torch.Generator | None) -> list[tuple[torch.Tensor, int]]:
    """Which images flip (CPU bool (N,)) along which dim: horizontal (-1) then vertical (-2), a draw each."""
    return [(torch.rand(n, generator=generator) < 0.5, dim)
            for flag, dim in ((horizontal, -1), (vertical, -2)) if flag]


def random_flip(images: torch.Tensor, horizontal: bool = True, vertical: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Flips each image with probability 1/2, left-right and/or up-down (exactly, with torch.flip).

    Example:
        >>> images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
        >>> out = random_flip(images, horizontal=True, generator=torch.Generator().manual_seed(0))
    """
    x = images
    for flip, dim in _flip_flags(len(x), horizontal, vertical, generator):
        x = torch.where(to_device(flip, x.device).view(-1, 1, 1, 1), x.flip(dim), x)
    return x


def _random_theta(n: int, h: int, w: int, rotation: float, width_shift: float, height_shift: float,
                  shear: float, zoom: float | tuple[float, float],
                  generator: torch.Generator | None) -> torch.Tensor:
    """`random_affine`'s draws, in its order, as float64 matrices (`.float()`: the ones it warps with)."""
    low, high = (1 - zoom, 1 + zoom) if isinstance(zoom, int | float) else zoom
    sx = width_shift * w if width_shift < 1 else width_shift
    sy = height_shift * h if height_shift < 1 else height_shift
    return affine_matrix(h, w, _uniform(n, -rotation, rotation, generator), _uniform(n, -sx, sx, generator),
                         _uniform(n, -sy, sy, generator), _uniform(n, -shear, shear, generator),
                         _uniform(n, low, high, generator), _uniform(n, low, high, generator),
                         dtype=torch.float64)


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
        >>> images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
        >>> g = torch.Generator().manual_seed(0)
        >>> out = random_affine(images, rotation=10, width_shift=0.1, zoom=0.1, generator=g)
    """
    n, _, h, w = images.shape
    theta = _random_theta(n, h, w, rotation, width_shift, height_shift, shear, zoom, generator)
    return warp(images, theta.float(), fill_mode, fill_value)


def _jitter_theta(n: int, h: int, w: int, scale: float | tuple[float, float],
                  generator: torch.Generator | None) -> torch.Tensor:
    """Scale-jitter's draws as float64 `affine_matrix`es: a factor s per image (both axes), then a shift
    uniform in ±|s - 1| / 2 of the size, so an enlarged image still covers the canvas and a reduced one stays
    whole inside it."""
    low, high = (1 - scale, 1 + scale) if isinstance(scale, int | float) else scale
    s = _uniform(n, low, high, generator)
    tx = _uniform(n, -1.0, 1.0, generator) * (s - 1).abs() * (w / 2)
    ty = _uniform(n, -1.0, 1.0, generator) * (s - 1).abs() * (h / 2)
    return affine_matrix(h, w, torch.zeros(n, dtype=torch.float64), tx, ty, zoom_x=s, zoom_y=s,
                         dtype=torch.float64)


def _then(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The `affine_matrix` that moves content by `first`, then by `second` (float64 (N, 2, 3) each)."""
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(len(first), 1, 3)
    # Each maps output -> input coordinates: the output reads `second`'s input, which reads `first`'s input.
    return (torch.cat([first, bottom], 1) @ torch.cat([second, bottom], 1))[:, :2]


def _mosaic_draws(n: int, h: int, w: int, p: float,
                  generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mosaic's draws, always the same number whatever comes out: which images become mosaics (probability p),
    their 3 partners, and their centres (rows and columns in [size // 4, size - size // 4]).

    Returns:
        (sources (N, 4) int64: the images shown top-left, top-right, bottom-left, bottom-right; centre_y,
        centre_x (N,) int64); an image that is not a mosaic has sources (i, i, i, i) and centre (0, 0).
    """
    on = torch.rand(n, generator=generator) < p
    partners = torch.randint(0, max(n, 1), (n, 3), generator=generator)
    cy = torch.randint(h // 4, h - h // 4 + 1, (n,), generator=generator)
    cx = torch.randint(w // 4, w - w // 4 + 1, (n,), generator=generator)
    own = torch.arange(n)
    sources = torch.where(on[:, None], torch.cat([own[:, None], partners], 1), own[:, None].expand(n, 4))
    return sources, torch.where(on, cy, 0), torch.where(on, cx, 0)


def _mosaic_reads(h: int, w: int, centre_y: torch.Tensor, centre_x: torch.Tensor,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each mosaic pixel reads: its quadrant (N, H, W) (0 top-left .. 3 bottom-right), and the source
    row (N, H, 1) and column (N, 1, W). Each tile's image touches the centre with its opposite corner, so a
    pixel (y, x) reads its tile's image at ((y - cy) mod H, (x - cx) mod W)."""
    cy, cx = to_device(centre_y, device).view(-1, 1, 1), to_device(centre_x, device).view(-1, 1, 1)
    ys = torch.arange(h, device=device).view(1, h, 1)
    xs = torch.arange(w, device=device).view(1, 1, w)
    quadrant = (ys >= cy).long() * 2 + (xs >= cx).long()
    return quadrant, torch.remainder(ys - cy, h), torch.remainder(xs - cx, w)


def mosaic(images: torch.Tensor, sources: torch.Tensor, centre_y: torch.Tensor,
           centre_x: torch.Tensor) -> torch.Tensor:
    """Tiles 4 images of the batch around a centre into one image of the same size (YOLOv4's mosaic), exactly.

    Output image i shows `sources[i, 0]` above-left of its centre (cy, cx), whose bottom-right corner touches
    the centre; `sources[i, 1]` above-right (its bottom-left corner at the centre), `sources[i, 2]`
    below-left and `sources[i, 3]` below-right. No resizing: every pixel is a copy (index arithmetic only).
    `Augmenter.detection` draws the sources and centres and moves boxes and masks likewise.

    Args:
        images: (N, C, H, W) or (N, H, W) label maps, any dtype.
        sources: (N, 4) int64 image indices; centre_y, centre_x: (N,) int64 in [0, H] and [0, W] (a centre of
            (0, 0) shows `sources[i, 3]` whole).

    Returns:
        The mosaics, of the images' shape, dtype and device.

    Example:
        >>> images = torch.arange(2).view(2, 1, 1, 1).expand(2, 1, 4, 4)
        >>> mosaic(images, torch.tensor([[0, 1, 1, 0], [1, 1, 1, 1]]), torch.tensor([1, 0]),
        ...        torch.tensor([3, 0]))[0, 0]
        tensor([[0, 0, 0, 1],
                [1, 1, 1, 0],
                [1, 1, 1, 0],
                [1, 1, 1, 0]])
    """
    n, h, w = images.shape[0], images.shape[-2], images.shape[-1]
    dev = images.device
    quadrant, rows, cols = _mosaic_reads(h, w, centre_y, centre_x, dev)
    src = to_device(sources, dev).gather(1, quadrant.flatten(1)).view(n, h, w)
    if images.dim() == 3:
        return images[src, rows, cols]
    c = images.shape[1]
    return images[src[:, None], torch.arange(c, device=dev).view(1, c, 1, 1), rows[:, None], cols[:, None]]


def _mosaic_boxes(boxes: list[torch.Tensor], sources: torch.Tensor, centre_y: torch.Tensor,
                  centre_x: torch.Tensor, h: int, w: int) -> tuple[_Boxes, torch.Tensor, torch.Tensor]:
    """The boxes of each mosaic: every box of each tile's image, shifted as its image, clipped to the canvas
    (which is clipping to the tile: a tile's image covers exactly its tile), dropped under 1 px.

    Returns:
        (the boxes as `_Boxes`, whose `index` numbers the rows listed here; per row, the index into
        `torch.cat(boxes)` of the box it shows, the quadrant it lies in, and the image it is in; CPU int64).
    """
    n = len(sources)
    _Boxes(boxes, n)  # checks the shapes
    dev = boxes[0].device if n else torch.device("cpu")
    counts = torch.tensor([len(b) for b in boxes], dtype=torch.long)
    starts = counts.cumsum(0) - counts
    src, quad = sources.flatten(), torch.arange(4).repeat(n)  # one entry per tile, image by image
    out = torch.arange(n).repeat_interleave(4)
    per_entry = counts[src]
    entry = torch.repeat_interleave(torch.arange(len(src)), per_entry)
    within = torch.arange(len(entry)) - (per_entry.cumsum(0) - per_entry)[entry]
    flat = starts[src][entry] + within
    dx = (centre_x[out] - w * (quad % 2 == 0).long())[entry].double()
    dy = (centre_y[out] - h * (quad < 2).long())[entry].double()
    shift = to_device(torch.stack([dx, dy, dx, dy], 1), dev)
    allb = torch.cat([b.to(dev, torch.float64) for b in boxes]) if n else torch.zeros(0, 4, dtype=torch.float64)
    shifted = allb[to_device(flat, dev)] + shift
    per_out = per_entry.view(n, 4).sum(1).tolist()
    moved = _Boxes(list(shifted.split(per_out)), n)
    moved.dtype = boxes[0].dtype if n and boxes[0].is_floating_point() else torch.float32
    moved.index = torch.arange(len(entry), device=dev)
    moved.move(torch.eye(2, 3, dtype=torch.float64).repeat(n, 1, 1), h, w)
    return moved, flat, quad[entry], out[entry]


def _mosaic_objects(masks: torch.Tensor, flat: torch.Tensor, quad: torch.Tensor, owner: torch.Tensor,
                    centre_y: torch.Tensor, centre_x: torch.Tensor) -> torch.Tensor:
    """The instance mask of each row of `_mosaic_boxes` in its mosaic: the object's mask (`masks[flat]`)
    read as `mosaic` reads its image, kept only inside its tile (0 elsewhere). (R, H, W) uint8."""
    _, h, w = masks.shape
    dev = masks.device
    quadrant, rows, cols = _mosaic_reads(h, w, centre_y[owner], centre_x[owner], dev)
    picked = masks[to_device(flat, dev)].to(torch.uint8)
    r = torch.arange(len(flat), device=dev).view(-1, 1, 1)
    inside = quadrant == to_device(quad, dev).view(-1, 1, 1)
    return torch.where(inside, picked[r, rows, cols], torch.zeros((), dtype=torch.uint8, device=dev))


def _check_targets(targets: list[dict], n: int, h: int, w: int) -> tuple[list[torch.Tensor], dict]:
    """The boxes of detection targets, and their per-object fields concatenated over the batch (labels, and
    iscrowd and masks where given); ValueError naming the target and field that does not fit."""
    if not isinstance(targets, list | tuple) or len(targets) != n:
        raise ValueError(f"targets must be a list of {n} dicts, one per image, got {shorten(targets)}")
    keys = [k for k in ("labels", "iscrowd", "masks") if targets and k in targets[0]]
    boxes, fields = [], {k: [] for k in keys}
    for i, t in enumerate(targets):
        b = t.get("boxes") if isinstance(t, dict) else None
        if not isinstance(b, torch.Tensor) or b.dim() != 2 or b.shape[1] != 4:
            raise ValueError(f"targets[{i}]['boxes'] must be a float tensor (M, 4), got {shorten(b)}")
        m = len(b)
        for k in keys:
            v = t.get(k)
            shape = (m, h, w) if k == "masks" else (m,)
            if not isinstance(v, torch.Tensor) or tuple(v.shape) != shape:
                raise ValueError(f"targets[{i}][{k!r}] must be a tensor of shape {shape} like the boxes and "
                                 f"images, got {shorten(v)}")
            fields[k].append(v)
        boxes.append(b)
    if any(k in t for t in targets for k in ("labels", "iscrowd", "masks") if k not in keys):
        raise ValueError("targets must all have the same fields (labels, iscrowd, masks) or none of them")
    return boxes, {k: torch.cat(v) for k, v in fields.items()}


def channel_shift(images: torch.Tensor, intensity: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Adds a random offset, uniform in [-intensity, intensity], to each channel of each image; clips to 0..255.

    Example:
        >>> images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
        >>> g = torch.Generator().manual_seed(0)
        >>> out = channel_shift(images.float(), 20.0, generator=g)
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
    """
    if padding == 0:
        return images
    oy, ox = _crop_offsets(len(images), padding, generator)
    return _crop(images, padding, oy, ox, fill_mode, fill_value)


def _crop_offsets(n: int, padding: int,
                  generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """`random_crop`'s draws: the crops' top-left corners in the padded images, rows then columns (CPU)."""
    oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    return oy, ox


def _crop(images: torch.Tensor, padding: int, oy: torch.Tensor, ox: torch.Tensor, fill_mode: str,
          fill_value: float) -> torch.Tensor:
    """Pads (N, C, H, W) by `padding` per `fill_mode` and crops H x W at rows oy.., columns ox.. of each."""
    n, c, h, w = images.shape
    x = images.float() if fill_mode in ("reflect", "nearest") and not images.is_floating_point() else images
    pad = (padding,) * 4
    padded = F.pad(x, pad, value=fill_value) if fill_mode == "constant" else F.pad(x, pad, mode=_PAD_MODES[fill_mode])
    dev = images.device
    oy, ox = to_device(oy, dev), to_device(ox, dev)
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
        >>> images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
        >>> g = torch.Generator().manual_seed(0)
        >>> out = random_erasing(images.float(), p=0.5, generator=g)
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
        >>> images, labels = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8), torch.arange(8)
        >>> g = torch.Generator().manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
        >>> x, ya, yb, lam = mixup(images, labels, 0.2, generator=g)
        >>> loss = mixed_cross_entropy(model(x / 255), ya, yb, lam)
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
        >>> images, labels = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8), torch.arange(8)
        >>> g = torch.Generator().manual_seed(0)
        >>> x, ya, yb, lam = cutmix(images, labels, 1.0, generator=g)
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
        >>> logits, ya = torch.randn(4, 10), torch.tensor([1, 2, 3, 4])
        >>> loss = mixed_cross_entropy(logits, ya, ya.flip(0), torch.full((4,), 0.7))
        >>> plain = mixed_cross_entropy(logits, ya, ya, torch.ones(4))   # no mixing
        >>> bool(torch.isclose(plain, F.cross_entropy(logits, ya)))
        True
    """
    ce_a = F.cross_entropy(logits, labels_a, reduction="none", label_smoothing=label_smoothing)
    ce_b = F.cross_entropy(logits, labels_b, reduction="none", label_smoothing=label_smoothing)
    lam = lam.to(ce_a.dtype)
    return (lam * ce_a + (1 - lam) * ce_b).mean()


class AugmentError(ValueError, ConvkitError):
    """An `AugmentConfig` field of the wrong type or out of range; the message names ``--augment <field>``."""


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# Each field's rule: (is the value allowed, what is expected). Zero switches an augmentation off.
_AUGMENT_RULES = {
    "rotation": (lambda v: _number(v) and v >= 0, "a number of degrees of at least 0"),
    "width_shift": (lambda v: _number(v) and v >= 0, "at least 0 (a fraction of the width below 1, else pixels)"),
    "height_shift": (lambda v: _number(v) and v >= 0, "at least 0 (a fraction of the height below 1, else pixels)"),
    "shear": (lambda v: _number(v) and 0 <= v < 90, "degrees in [0, 90)"),
    "zoom": (lambda v: (_number(v) and 0 <= v < 1) or (isinstance(v, tuple) and len(v) == 2
                                                       and all(_number(z) for z in v) and 0 < v[0] <= v[1]),
             "a fraction in [0, 1) or a pair of factors [low, high] with 0 < low <= high"),
    "horizontal_flip": (lambda v: v in (True, False) and not isinstance(v, float), "true or false (or 1 or 0)"),
    "vertical_flip": (lambda v: v in (True, False) and not isinstance(v, float), "true or false (or 1 or 0)"),
    "channel_shift": (lambda v: _number(v) and v >= 0, "pixel units of at least 0"),
    "fill_mode": (lambda v: isinstance(v, str) and v in FILL_MODES, f"one of {', '.join(FILL_MODES)}"),
    "fill_value": (lambda v: _number(v) and 0 <= v <= 255, "a pixel value in [0, 255]"),
    "crop_padding": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                     "a whole number of pixels of at least 0"),
    "erasing": (lambda v: _number(v) and 0 <= v <= 1, "a probability in [0, 1]"),
    "mixup": (lambda v: _number(v) and v >= 0, "an alpha of at least 0 (0: off)"),
    "cutmix": (lambda v: _number(v) and v >= 0, "an alpha of at least 0 (0: off)"),
    "scale_jitter": (lambda v: (_number(v) and 0 <= v < 1) or (isinstance(v, tuple) and len(v) == 2
                                                               and all(_number(z) for z in v) and 0 < v[0] <= v[1]),
                     "a fraction in [0, 1) or a pair of factors [low, high] with 0 < low <= high"),
    "mosaic": (lambda v: _number(v) and 0 <= v <= 1, "a probability in [0, 1]"),
}


def _check_augment_field(name: str, value) -> None:
    """Refuses an `AugmentConfig` value its field's rule (`_AUGMENT_RULES`) does not allow, naming the option."""
    allowed, expected = _AUGMENT_RULES.get(name, (lambda v: True, ""))  # a subclass's own fields: its own rules
    if not allowed(value):
        raise AugmentError(f"--augment {name} must be {expected}, got {shorten(value)}")


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
        scale_jitter: ± fraction, or a (low, high) pair of factors: each image is scaled by one factor on both
            axes (its aspect kept) and placed at a random position, the enlarged image cropped, the reduced one
            surrounded by `fill_mode` (use "constant" for detection, so that no object is smeared outside its
            box). Boxes and masks follow (`Augmenter.with_targets`, `Augmenter.detection`).
        mosaic: the probability that an image becomes a mosaic of itself and 3 other images of the batch
            (YOLOv4), tiled around a random centre on a canvas of the images' size; detection and segmentation
            only (`Augmenter.detection`, `Augmenter.with_targets` with masks): the plain call refuses it.

    Example:
        >>> config = AugmentConfig(rotation=10, width_shift=0.1, horizontal_flip=True, crop_padding=4)
        >>> config.affine
        True
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
    scale_jitter: float | tuple[float, float] = 0.0
    mosaic: float = 0.0

    def __post_init__(self):
        if isinstance(self.zoom, list):  # YAML and `--augment zoom=[0.8,1.2]` give a list
            self.zoom = tuple(self.zoom)
        if isinstance(self.scale_jitter, list):
            self.scale_jitter = tuple(self.scale_jitter)
        for name, value in asdict(self).items():
            _check_augment_field(name, value)

    def check_image_size(self, height: int, width: int) -> None:
        """Refuses a crop padding as large as the images (the crop would show mostly padding; "reflect" cannot
        pad that far): called by the trainer once the images are known, before any work.

        Raises:
            AugmentError: ``crop_padding`` >= the height or width.

        Example:
            >>> AugmentConfig(crop_padding=4).check_image_size(28, 28)
            >>> AugmentConfig(crop_padding=40).check_image_size(28, 28)
            Traceback (most recent call last):
            ...
            convkit.data.augment.AugmentError: --augment crop_padding=40 is not smaller than the images (28x28); ...
        """
        if self.crop_padding >= min(height, width):
            raise AugmentError(f"--augment crop_padding={self.crop_padding} is not smaller than the images "
                               f"({height}x{width}); pad by fewer pixels, e.g. {max(1, min(height, width) // 8)}")

    @property
    def affine(self) -> bool:
        """Whether any of rotation, shifts, shear or zoom is on (else the affine warp is skipped)."""
        return any([self.rotation, self.width_shift, self.height_shift, self.shear, self.zoom not in (0, 0.0, (1, 1))])

    @property
    def jitter(self) -> bool:
        """Whether scale-jitter is on (a factor range other than exactly 1)."""
        return self.scale_jitter not in (0, 0.0, (1, 1))


class Augmenter:
    """Applies an `AugmentConfig` to batches, reproducibly: same seed, same batches -> same output.

    Order: mosaic (targets only), random crop, flips, affine and scale-jitter (one warp), channel shift, erasing,
    then mixup or cutmix. `with_targets` moves segmentation masks and bounding boxes with their images through
    the geometric steps; `detection` does so for detection targets (labels, crowd flags, instance masks).

    Args:
        config: an AugmentConfig (or keyword arguments for one).
        seed: seeds the Augmenter's own CPU generator; save `state_dict()` to resume exactly.

    Example:
        >>> images, labels = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8), torch.arange(8)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
        >>> augment = Augmenter(AugmentConfig(rotation=10, horizontal_flip=True, mixup=0.2), seed=0)
        >>> x, ya, yb, lam = augment(images, labels)     # x: float 0..255 on the images' device
        >>> loss = mixed_cross_entropy(model(x / 255), ya, yb, lam)   # normalise as the dataset does
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

        Raises:
            AugmentError: if the config asks for a mosaic (detection and segmentation only).
        """
        c, g = self.config, self.generator
        if c.mosaic > 0:
            raise AugmentError(f"--augment mosaic={c.mosaic} is for detection and segmentation (one label per "
                               "image cannot describe 4 images); for classification use cutmix")
        x = self._photometric(self._geometric(images)[0])
        use_cutmix = c.cutmix > 0 and (c.mixup <= 0 or bool(torch.rand(1, generator=g) < 0.5))
        if use_cutmix:
            return cutmix(x, labels, c.cutmix, g)
        if c.mixup > 0:
            return mixup(x, labels, c.mixup, g)
        return x, labels, labels, torch.ones(len(x), device=x.device)

    def with_targets(self, images: torch.Tensor, masks: torch.Tensor | None = None,
                     boxes: list[torch.Tensor] | None = None, *, ignore_index: int = 255,
                     min_visibility: float = 0.0) -> tuple[torch.Tensor, torch.Tensor | None,
                                                           list[torch.Tensor] | None, list[torch.Tensor] | None]:
        """Augments a batch of a segmentation or detection task: masks and boxes move with their images.

        The images come out exactly as from `__call__` with the same generator state (the same draws, in the
        same order). The random crop, flips and affine warp move the masks and boxes with the same offsets,
        flags and matrices: masks by nearest neighbour (`warp_masks`), pixels from outside the image (the crop
        padding, the warp's fill) labelled `ignore_index`, whatever `fill_mode` shows in the image; boxes as
        `warp_boxes` does, enclosing boxes clipped to the image, dropped when left under 1 pixel or under
        `min_visibility`. Channel shift and erasing leave the targets alone.

        Args:
            images: (N, C, H, W), uint8 or float on the 0..255 scale.
            masks: (N, H, W) integer label maps, or None.
            boxes: N float tensors (M_i, 4) in pixel xyxy (x2, y2 exclusive edges), or None.
            ignore_index: the mask label of pixels from outside the image.
            min_visibility: the least fraction of a moved box's area that must stay inside the image.

        Returns:
            (float32 images, masks, boxes, kept): masks (N, H, W) of their dtype, boxes N tensors (K_i, 4),
            kept N int64 tensors of the indices into `boxes[i]` kept (`labels[i][kept[i]]` follows them);
            None for the targets not given.

        Raises:
            ValueError: if the config mixes images (mixup, cutmix), or masks or boxes do not fit the images.

        Example:
            >>> augment = Augmenter(AugmentConfig(horizontal_flip=True, rotation=10), seed=0)
            >>> images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
            >>> masks = torch.zeros(2, 32, 32, dtype=torch.uint8)
            >>> boxes = [torch.tensor([[4.0, 4.0, 12.0, 20.0], [40.0, 0.0, 50.0, 8.0]]), torch.zeros(0, 4)]
            >>> x, masks, boxes, kept = augment.with_targets(images, masks, boxes)
            >>> x.shape, masks.shape, [len(b) for b in boxes], kept[0]    # the second box was outside
            (torch.Size([2, 3, 32, 32]), torch.Size([2, 32, 32]), [1, 0], tensor([0]))
        """
        c = self.config
        if c.mixup > 0 or c.cutmix > 0:
            raise ValueError("mixup/cutmix mix labels of classification; not with masks/boxes")
        if c.mosaic > 0 and boxes is not None:
            raise ValueError("mosaic brings the boxes of 4 images into one, so their labels must follow: use "
                             "Augmenter.detection(images, targets)")
        if masks is not None:
            _check_masks(masks, (len(images), *images.shape[2:]))
        if c.mosaic > 0:
            sources, cy, cx = _mosaic_draws(len(images), *images.shape[2:], c.mosaic, self.generator)
            images = mosaic(images, sources, cy, cx)
            masks = None if masks is None else mosaic(masks, sources, cy, cx)
        x, masks, boxes, kept = self._geometric(images, masks, boxes, ignore_index, min_visibility)
        return self._photometric(x), masks, boxes, kept

    def detection(self, images: torch.Tensor, targets: list[dict], *,
                  min_visibility: float = 0.0) -> tuple[torch.Tensor, list[dict]]:
        """Augments a batch of a detection task: mosaic, then as `with_targets`, objects following their pixels.

        With `mosaic` on, each image becomes, with that probability, a mosaic of itself (top-left) and 3 images
        of the batch drawn at random (`mosaic`), around a random centre in the middle half of each axis; the
        objects of each tile move with it and are clipped to it. Then the random crop, flips, affine warp and
        scale-jitter move the boxes and masks as in `with_targets`; boxes are clipped to the image and dropped
        when left under 1 pixel or under `min_visibility` of their moved area (one rule for every step), and
        their labels, crowd flags and instance masks go with them. The draws are made on the CPU generator,
        the same number whatever the data, so a seed gives the same output on any device.

        Args:
            images: (N, C, H, W), uint8 or float on the 0..255 scale.
            targets: N dicts in convkit's internal form: "boxes" float (M_i, 4) pixel xyxy, "labels" int64
                (M_i,), optional "iscrowd" bool (M_i,) and "masks" uint8 or bool (M_i, H, W) instance masks
                (on all targets or none).
            min_visibility: the least fraction of a moved box's area that must stay inside the image.

        Returns:
            (float32 images, targets): N new dicts with "boxes" (K_i, 4) of the boxes' dtype, "labels",
            "iscrowd" and "masks" (those given) for the objects kept. Other keys are not carried (an "area"
            would be stale; a mosaic has 4 image ids).

        Raises:
            ValueError: if the config mixes images (mixup, cutmix) or the targets do not fit the images.

        Example:
            >>> augment = Augmenter(AugmentConfig(mosaic=1.0, scale_jitter=(0.5, 1.5), fill_mode="constant"))
            >>> images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
            >>> targets = [{"boxes": torch.tensor([[4.0, 4.0, 12.0, 20.0]]), "labels": torch.tensor([3])},
            ...            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
            >>> x, out = augment.detection(images, targets)
            >>> x.shape, sorted(out[0])
            (torch.Size([2, 3, 32, 32]), ['boxes', 'labels'])
        """
        c = self.config
        if c.mixup > 0 or c.cutmix > 0:
            raise ValueError("mixup/cutmix mix labels of classification; not with boxes")
        n, _, h, w = images.shape
        boxes, fields = _check_targets(targets, n, h, w)
        if c.mosaic > 0:
            sources, cy, cx = _mosaic_draws(n, h, w, c.mosaic, self.generator)
        else:
            sources, cy, cx = torch.arange(n)[:, None].expand(n, 4), torch.zeros(n, dtype=torch.long), \
                torch.zeros(n, dtype=torch.long)
        moved, flat, quad, owner = _mosaic_boxes(boxes, sources, cy, cx, h, w)
        if c.mosaic > 0:
            images = mosaic(images, sources, cy, cx)
        instances = None
        if "masks" in fields:
            instances = (_mosaic_objects(fields["masks"], flat, quad, owner, cy, cx), owner)
        out = self._geometric(images, None, moved, 0, min_visibility, instances)
        x, _, new_boxes, kept = out[:4]
        objects = out[4] if instances is not None else None
        result = []
        for i in range(n):
            rows = kept[i]
            target = {"boxes": new_boxes[i]}
            for key, values in fields.items():
                if key == "masks":
                    target[key] = objects[rows.to(objects.device)].to(values.dtype)
                else:
                    target[key] = values[flat.to(values.device)[rows.to(values.device)]]
            result.append(target)
        return self._photometric(x), result

    def _geometric(self, images: torch.Tensor, masks: torch.Tensor | None = None,
                   boxes: list[torch.Tensor] | _Boxes | None = None, ignore_index: int = 255,
                   min_visibility: float = 0.0, instances: tuple[torch.Tensor, torch.Tensor] | None = None):
        """Random crop, flips, affine and scale-jitter of the images (float32), their masks and boxes, as
        configured. `instances` is (masks (R, H, W) uint8, owner (R,)): per-object masks moved with the image
        `owner` names (outside pixels 0); the result then ends with them."""
        c, g = self.config, self.generator
        n, _, h, w = images.shape
        moved = boxes if isinstance(boxes, _Boxes) else None if boxes is None else _Boxes(boxes, n)
        objects, owner = instances if instances is not None else (None, None)
        x = images
        if c.crop_padding:
            c.check_image_size(h, w)
            p = c.crop_padding
            oy, ox = _crop_offsets(n, p, g)
            x = _crop(images, p, oy, ox, c.fill_mode, c.fill_value)
            if masks is not None:
                masks = _crop(masks[:, None], p, oy, ox, "constant", ignore_index)[:, 0]
            if objects is not None:
                objects = _crop(objects[:, None], p, oy[owner], ox[owner], "constant", 0)[:, 0]
            if moved is not None:
                shift = torch.eye(2, 3, dtype=torch.float64).repeat(n, 1, 1)
                shift[:, 0, 2], shift[:, 1, 2] = p - ox, p - oy
                moved.move(shift, h, w)
        x = x.float()
        matrix = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1) if moved is not None else None  # for boxes
        for flip, dim in _flip_flags(n, c.horizontal_flip, c.vertical_flip, g):
            x = torch.where(to_device(flip, x.device).view(-1, 1, 1, 1), x.flip(dim), x)
            if masks is not None:
                masks = torch.where(to_device(flip, masks.device).view(-1, 1, 1), masks.flip(dim), masks)
            if objects is not None:
                objects = torch.where(to_device(flip[owner], objects.device).view(-1, 1, 1), objects.flip(dim),
                                      objects)
            if moved is not None:
                axis = 0 if dim == -1 else 1
                matrix[flip, axis, axis], matrix[flip, axis, 2] = -1.0, float(w if axis == 0 else h)
        if c.affine or c.jitter:
            theta = (_random_theta(n, h, w, c.rotation, c.width_shift, c.height_shift, c.shear, c.zoom, g)
                     if c.affine else torch.eye(2, 3, dtype=torch.float64).repeat(n, 1, 1))
            if c.jitter:  # drawn after the affine's draws, so configs without it draw as before
                theta = _then(theta, _jitter_theta(n, h, w, c.scale_jitter, g))
            x = warp(x, theta.float(), c.fill_mode, c.fill_value)
            if masks is not None:
                masks = warp_masks(masks, theta.float(), ignore_index)
            if objects is not None:
                objects = warp_masks(objects, theta.float()[owner], 0)
            if moved is not None:
                bottom = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(n, 1, 3)
                matrix = torch.cat([_pixel_matrices(theta, h, w), bottom], 1) @ matrix
        if moved is None:
            return x, masks, None, None
        moved.move(matrix[:, :2], h, w)
        if instances is not None:
            return (x, masks, *moved.result(min_visibility), objects)
        return (x, masks, *moved.result(min_visibility))

    def _photometric(self, x: torch.Tensor) -> torch.Tensor:
        """Channel shift and erasing, as configured (they move nothing)."""
        c, g = self.config, self.generator
        if c.channel_shift:
            x = channel_shift(x, c.channel_shift, g)
        if c.erasing:
            x = random_erasing(x, c.erasing, generator=g)
        return x

    def state_dict(self) -> dict:
        """The generator's state, to save with a checkpoint."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restores the generator's state saved by `state_dict`."""
        self.generator.set_state(state["generator"])
