"""Masks and boxes move with their images: checked against torch's exact operations (flip, rot90, a padded
crop's window), against images that draw their own objects, and against the augmentation as it was before
targets existed (a frozen copy below), which the training engine's exact resumes depend on."""

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from convkit.data import augment
from convkit.data.augment import (
    AugmentConfig,
    Augmenter,
    affine_matrix,
    channel_shift,
    cutmix,
    mixup,
    random_erasing,
    to_device,
    warp_boxes,
    warp_masks,
)

N = 6


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --- The classification path as it was before masks and boxes (commit 9607f0b), verbatim but for docstrings.


def _old_affine_matrix(height, width, angle, tx, ty, shear=None, zoom_x=None, zoom_y=None):
    angle = torch.deg2rad(torch.as_tensor(angle, dtype=torch.float64))
    n = len(angle)
    one, zero = torch.ones(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    shear = torch.deg2rad(torch.as_tensor(shear, dtype=torch.float64)) if shear is not None else zero
    zx = torch.as_tensor(zoom_x, dtype=torch.float64) if zoom_x is not None else one
    zy = torch.as_tensor(zoom_y, dtype=torch.float64) if zoom_y is not None else one
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotate = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)
    shear_m = torch.stack([torch.stack([one, torch.tan(shear)], -1), torch.stack([zero, one], -1)], -2)
    forward = rotate @ shear_m @ torch.diag_embed(torch.stack([zx, zy], -1))
    inverse = torch.linalg.inv(forward)
    t = torch.stack([torch.as_tensor(tx, dtype=torch.float64), torch.as_tensor(ty, dtype=torch.float64)], -1)
    half = torch.tensor([width / 2, height / 2], dtype=torch.float64)
    linear = inverse * half.view(1, 1, 2) / half.view(1, 2, 1)
    shift = -(inverse @ t.unsqueeze(-1)).squeeze(-1) / half
    return torch.cat([linear, shift.unsqueeze(-1)], -1).float()


def _old_warp(images, theta, fill_mode="nearest", fill_value=0.0):
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
        grid = torch.remainder(grid + 1, 2) - 1
        grid = grid * torch.tensor([w / (w + 2), h / (h + 2)], device=x.device)
        out = F.grid_sample(F.pad(src, (1, 1, 1, 1), mode="circular"), grid, padding_mode="border",
                            align_corners=False)
    else:
        out = F.grid_sample(src, grid, padding_mode=augment.FILL_MODES[fill_mode], align_corners=False)
        if fill_mode == "constant" and fill_value != 0:
            inside = F.grid_sample(torch.ones_like(src[:, :1]), grid, padding_mode="zeros",
                                   align_corners=False)
            out = out + (1 - inside) * fill_value
    x = x.clone()
    x[moving] = out
    return x


def _old_random_flip(images, horizontal=True, vertical=False, generator=None):
    x = images
    for flag, dim in ((horizontal, -1), (vertical, -2)):
        if flag:
            mask = to_device(torch.rand(len(x), generator=generator) < 0.5, x.device).view(-1, 1, 1, 1)
            x = torch.where(mask, x.flip(dim), x)
    return x


def _old_random_affine(images, *, rotation=0.0, width_shift=0.0, height_shift=0.0, shear=0.0, zoom=0.0,
                       fill_mode="nearest", fill_value=0.0, generator=None):
    n, _, h, w = images.shape
    low, high = (1 - zoom, 1 + zoom) if isinstance(zoom, int | float) else zoom
    sx = width_shift * w if width_shift < 1 else width_shift
    sy = height_shift * h if height_shift < 1 else height_shift
    u = augment._uniform
    theta = _old_affine_matrix(h, w, u(n, -rotation, rotation, generator), u(n, -sx, sx, generator),
                               u(n, -sy, sy, generator), u(n, -shear, shear, generator),
                               u(n, low, high, generator), u(n, low, high, generator))
    return _old_warp(images, theta, fill_mode, fill_value)


def _old_random_crop(images, padding, fill_mode="constant", fill_value=0.0, generator=None):
    if padding == 0:
        return images
    n, c, h, w = images.shape
    x = images.float() if fill_mode in ("reflect", "nearest") and not images.is_floating_point() else images
    pad = (padding,) * 4
    if fill_mode == "constant":
        padded = F.pad(x, pad, value=fill_value)
    else:
        padded = F.pad(x, pad, mode=augment._PAD_MODES[fill_mode])
    dev = images.device
    oy = to_device(torch.randint(0, 2 * padding + 1, (n,), generator=generator), dev)
    ox = to_device(torch.randint(0, 2 * padding + 1, (n,), generator=generator), dev)
    rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :]
    out = padded[torch.arange(n, device=dev)[:, None, None, None],
                 torch.arange(c, device=dev)[None, :, None, None], rows, cols]
    return out.to(images.dtype)


def _old_call(c, g, images, labels):
    x = _old_random_crop(images, c.crop_padding, c.fill_mode, c.fill_value, g).float()
    x = _old_random_flip(x, c.horizontal_flip, c.vertical_flip, g)
    if c.affine:
        x = _old_random_affine(x, rotation=c.rotation, width_shift=c.width_shift, height_shift=c.height_shift,
                               shear=c.shear, zoom=c.zoom, fill_mode=c.fill_mode, fill_value=c.fill_value,
                               generator=g)
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


EVERYTHING = dict(rotation=25, width_shift=0.1, height_shift=2, shear=10, zoom=0.15, horizontal_flip=True,
                  vertical_flip=True, channel_shift=20, crop_padding=3, erasing=0.5)
CONFIGS = [
    *({**EVERYTHING, "fill_mode": mode, "mixup": 0.4, "cutmix": 1.0}
      for mode in ("nearest", "constant", "reflect", "wrap")),
    {**EVERYTHING, "fill_mode": "constant", "fill_value": 7.0},
    {"horizontal_flip": True}, {"crop_padding": 4}, {"rotation": 90, "zoom": (0.5, 1.5)}, {"mixup": 0.2}, {},
]


@pytest.mark.parametrize("config", CONFIGS, ids=range(len(CONFIGS)))
def test_without_targets_the_batches_are_bit_for_bit_those_of_before(config):
    c = AugmentConfig(**config)
    x = torch.randint(0, 256, (5, 3, 17, 23), generator=gen(1), dtype=torch.uint8)
    y = torch.arange(5)
    for seed in (0, 7):
        new, old = Augmenter(c, seed=seed), gen(seed)
        for batch in (x, x.float(), x):  # successive batches continue from the generator's state
            for a, b in zip(new(batch, y), _old_call(c, old, batch, y), strict=True):
                assert a.dtype == b.dtype and torch.equal(a, b)
        assert torch.equal(new.generator.get_state(), old.get_state())


def scene(h=40, w=48, n=N, seed=0, cells=(4, 4)):
    """Images that draw their own objects: object j of an image is a filled rectangle of value 10 * (j + 1)
    in a cell of its own (no two overlap), labelled j + 1 in the mask, with its box; background 0."""
    g = gen(seed)
    ch, cw = h // cells[0], w // cells[1]
    images = torch.zeros(n, 3, h, w, dtype=torch.uint8)
    masks = torch.zeros(n, h, w, dtype=torch.int64)
    boxes = []
    for i in range(n):
        count = int(torch.randint(3, 13, (1,), generator=g))
        where = torch.randperm(cells[0] * cells[1], generator=g)[:count].tolist()
        own = []
        for j, cell in enumerate(where):
            y1 = (cell // cells[1]) * ch + int(torch.randint(0, ch - 2, (1,), generator=g))
            x1 = (cell % cells[1]) * cw + int(torch.randint(0, cw - 2, (1,), generator=g))
            y2 = y1 + int(torch.randint(2, (cell // cells[1] + 1) * ch - y1 + 1, (1,), generator=g))
            x2 = x1 + int(torch.randint(2, (cell % cells[1] + 1) * cw - x1 + 1, (1,), generator=g))
            images[i, :, y1:y2, x1:x2] = 10 * (j + 1)
            masks[i, y1:y2, x1:x2] = j + 1
            own.append([x1, y1, x2, y2])
        boxes.append(torch.tensor(own, dtype=torch.float32))
    return images, masks, boxes


def pixels_box(mask):
    """The xyxy box (exclusive x2, y2) of a boolean (H, W) map's True pixels."""
    rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
    return torch.tensor([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=torch.float32)


def test_with_targets_gives_the_images_of_the_plain_call():
    images, masks, boxes = scene()
    config = AugmentConfig(**EVERYTHING, fill_mode="reflect")
    a, b = Augmenter(config, seed=3), Augmenter(config, seed=3)
    for _ in range(2):
        x, new_masks, new_boxes, kept = a.with_targets(images, masks, boxes)
        assert torch.equal(x, b(images, torch.arange(N))[0])
        assert new_masks.dtype == torch.int64 and new_masks.shape == masks.shape
        assert len(new_boxes) == len(kept) == N and all(len(p) == len(k) for p, k in zip(new_boxes, kept))
    assert torch.equal(a.generator.get_state(), b.generator.get_state())
    x, m, bx, k = Augmenter(config, seed=3).with_targets(images)
    assert torch.equal(x, Augmenter(config, seed=3)(images, torch.arange(N))[0]) and m is bx is k is None


def test_flips_move_boxes_and_masks_as_hand_worked():
    images, masks, boxes = scene(h=30, w=44)
    h, w = 30, 44
    x, new_masks, new_boxes, kept = Augmenter(horizontal_flip=True, vertical_flip=True, seed=1).with_targets(
        images, masks.to(torch.uint8), boxes)
    seen = set()
    for i in range(N):
        flip_x, flip_y = [torch.equal(x[i], images[i].float().flip(dims)) for dims in ((-1,), (-2,))]
        both = torch.equal(x[i], images[i].float().flip(-1, -2))
        (x1, y1, x2, y2), expected = boxes[i].unbind(-1), masks[i]
        if flip_x or both:
            x1, x2, expected = w - x2, w - x1, expected.flip(-1)
        if flip_y or both:
            y1, y2, expected = h - y2, h - y1, expected.flip(-2)
        seen.add((flip_x or both, flip_y or both))
        assert torch.equal(new_masks[i], expected.to(torch.uint8))
        assert torch.equal(new_boxes[i], torch.stack([x1, y1, x2, y2], -1))  # exact
        assert torch.equal(kept[i], torch.arange(len(boxes[i])))
    assert len(seen) >= 3  # several of the four combinations were drawn


@pytest.mark.parametrize("angle, k", [(90, 1), (-90, -1), (180, 2)])
def test_right_angle_rotation_of_masks_and_boxes_equals_rot90(angle, k):
    images, masks, boxes = scene(h=36, w=36)
    theta = affine_matrix(36, 36, torch.full((N,), float(angle)), torch.zeros(N), torch.zeros(N))
    rotated = warp_masks(masks, theta, ignore_index=255)
    assert torch.equal(rotated, torch.rot90(masks, k, dims=(1, 2)))  # exact: no label is blended or lost
    moved, kept = warp_boxes(boxes, theta, 36, 36)
    for i in range(N):
        assert torch.equal(kept[i], torch.arange(len(boxes[i])))
        x1, y1, x2, y2 = boxes[i].unbind(-1)
        by_hand = {1: (y1, 36 - x2, y2, 36 - x1), -1: (36 - y2, x1, 36 - y1, x2),
                   2: (36 - x2, 36 - y2, 36 - x1, 36 - y1)}
        assert torch.allclose(moved[i], torch.stack(by_hand[k], -1), atol=1e-4)
        for j, box in enumerate(moved[i]):  # and the box of the rotated object's pixels
            assert torch.allclose(box, pixels_box(rotated[i] == j + 1), atol=1e-4)


def test_a_padded_crop_shifts_boxes_by_its_offset_and_marks_the_padding_ignored():
    images, masks, boxes = scene(h=20, w=24, cells=(2, 2))
    p = 5
    augmenter = Augmenter(crop_padding=p, fill_mode="constant", fill_value=3, seed=2)
    x, new_masks, new_boxes, kept = augmenter.with_targets(images, masks, boxes, ignore_index=-1)
    padded_images = F.pad(images.float(), (p,) * 4, value=3)
    padded_masks = F.pad(masks, (p,) * 4, value=-1)
    offsets = set()
    for i in range(N):
        hits = [(oy, ox) for oy in range(2 * p + 1) for ox in range(2 * p + 1)
                if torch.equal(x[i], padded_images[i, :, oy:oy + 20, ox:ox + 24])]
        assert len(hits) == 1  # the crop's window, told by the image alone
        oy, ox = hits[0]
        offsets.add((oy, ox))
        assert torch.equal(new_masks[i], padded_masks[i, oy:oy + 20, ox:ox + 24])
        shifted = boxes[i] + torch.tensor([p - ox, p - oy] * 2, dtype=torch.float32)
        clipped = torch.minimum(shifted.clamp(min=0), torch.tensor([24.0, 20.0] * 2))
        wide = ((clipped[:, 2:] - clipped[:, :2]) >= 1).all(1)
        assert torch.equal(kept[i], wide.nonzero().flatten())
        assert torch.equal(new_boxes[i], clipped[wide])
    assert len(offsets) > 1


@pytest.fixture
def nearest_warp(monkeypatch):
    """The Augmenter's image warp by nearest neighbour, so that every pixel says which object it shows."""
    monkeypatch.setattr(augment, "warp", functools.partial(augment.warp, mode="nearest"))


GEOMETRY = [
    dict(crop_padding=6, horizontal_flip=True, vertical_flip=True, rotation=180, width_shift=0.25,
         height_shift=0.25, shear=20, zoom=(0.6, 1.6)),
    dict(crop_padding=8, horizontal_flip=True, rotation=30, zoom=0.3),
    dict(rotation=10, width_shift=12, height_shift=12),
]


@pytest.mark.parametrize("config", GEOMETRY, ids=range(len(GEOMETRY)))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_moved_masks_and_boxes_match_the_objects_the_images_show(nearest_warp, config, seed):
    h, w = 40, 48
    images, masks, boxes = scene(h, w, seed=seed)
    augmenter = Augmenter(AugmentConfig(**config, fill_mode="constant"), seed=seed)
    x, new_masks, new_boxes, kept = augmenter.with_targets(images, masks.to(torch.uint8), boxes)
    x = x[:, 0]
    outside = new_masks == 255
    # Every pixel: the mask's label is the object whose value the image shows; from outside, the fill.
    assert torch.equal(x, torch.where(outside, 0, 10 * new_masks.float()))
    assert outside.any() and (~outside).all(0).any()
    dropped = 0
    for i in range(N):
        for j in range(len(boxes[i])):
            there = new_masks[i] == j + 1
            if j not in kept[i].tolist():
                dropped += 1  # pushed out: at most a sliver of it left in the image
                assert not there.any() or min(pixels_box(there)[2:] - pixels_box(there)[:2]) <= 1
        for j, box in zip(kept[i].tolist(), new_boxes[i]):
            assert 0 <= box[0] and box[0] + 1 <= box[2] <= w and 0 <= box[1] and box[1] + 1 <= box[3] <= h
            there = new_masks[i] == j + 1
            if not there.any():  # a sliver between pixel centres
                assert min(box[2:] - box[:2]) < 2
                continue
            tight = pixels_box(there)
            # It encloses its pixels; not clipped, it is as tight as pixels allow.
            assert (box[:2] <= tight[:2] + 1).all() and (box[2:] >= tight[2:] - 1).all()
            if 0 < box[0] and 0 < box[1] and box[2] < w and box[3] < h:
                assert torch.allclose(box, tight, atol=1 + 1e-4)
    assert dropped > 0 or config is GEOMETRY[2]


@pytest.mark.parametrize("dx, dy", [(3, -2), (-7, 5), (20, 0)])
def test_integer_shifts_move_masks_and_boxes_exactly(dx, dy):
    h, w = 30, 36
    images, masks, boxes = scene(h, w, cells=(3, 3))
    theta = affine_matrix(h, w, torch.zeros(N), torch.full((N,), float(dx)), torch.full((N,), float(dy)),
                          dtype=torch.float64)
    moved_masks = warp_masks(masks, theta)
    rolled = torch.roll(masks, (dy, dx), dims=(1, 2))
    inside = torch.zeros(h, w, dtype=torch.bool)
    inside[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = True
    assert torch.equal(moved_masks, torch.where(inside, rolled, 255))
    moved, kept = warp_boxes(boxes, theta, h, w)
    for i in range(N):
        expected = boxes[i] + torch.tensor([dx, dy, dx, dy], dtype=torch.float32)
        expected = torch.minimum(expected.clamp(min=0), torch.tensor([w, h, w, h], dtype=torch.float32))
        wide = ((expected[:, 2:] - expected[:, :2]) >= 1).all(1)
        assert torch.equal(moved[i], expected[wide]) and torch.equal(kept[i], wide.nonzero().flatten())
        for j, box in zip(kept[i].tolist(), moved[i]):
            assert torch.equal(box, pixels_box(moved_masks[i] == j + 1))
    if dx == 20:
        assert sum(len(k) for k in kept) < sum(len(b) for b in boxes)  # some were pushed out


def test_boxes_pushed_out_are_dropped_and_kept_says_which():
    boxes = [torch.tensor([[0.0, 0.0, 4.0, 4.0],     # pushed out entirely
                           [6.0, 2.0, 10.0, 6.0],    # half out: 2 of 4 pixels wide stay
                           [12.0, 1.0, 20.0, 9.0],   # stays inside
                           [5.0, 10.0, 7.5, 12.0]]),  # 0.5 px wide left
             torch.zeros(0, 4)]
    theta = affine_matrix(16, 24, torch.zeros(2), torch.full((2,), -8.0), torch.zeros(2), dtype=torch.float64)
    moved, kept = warp_boxes(boxes, theta, 16, 24)
    assert [k.tolist() for k in kept] == [[1, 2], []]
    assert torch.equal(moved[0], torch.tensor([[0.0, 2.0, 2.0, 6.0], [4.0, 1.0, 12.0, 9.0]]))
    assert moved[1].shape == (0, 4)
    assert warp_boxes(boxes, theta, 16, 24, min_visibility=0.6)[1][0].tolist() == [2]
    assert warp_boxes(boxes, theta, 16, 24, min_visibility=0.5)[1][0].tolist() == [1, 2]
    # Rotated 45 degrees about the centre, a square's enclosing box grows by sqrt(2).
    square = [torch.tensor([[8.0, 4.0, 16.0, 12.0]])]
    turn = affine_matrix(16, 24, torch.tensor([45.0]), torch.zeros(1), torch.zeros(1))
    turned, _ = warp_boxes(square, turn, 16, 24)
    half = 4 * math.sqrt(2)
    assert torch.allclose(turned[0], torch.tensor([[12 - half, 8 - half, 12 + half, 8 + half]]), atol=1e-4)


def test_mixing_and_misfit_targets_are_refused():
    images, masks, boxes = scene(h=20, w=24, cells=(2, 2))
    for mixing in ({"mixup": 0.2}, {"cutmix": 1.0}):
        with pytest.raises(ValueError, match="mixup/cutmix mix labels of classification; not with masks"):
            Augmenter(horizontal_flip=True, **mixing).with_targets(images, masks, boxes)
    augmenter = Augmenter(horizontal_flip=True)
    with pytest.raises(ValueError, match="integer label maps"):
        augmenter.with_targets(images, masks.float())
    with pytest.raises(ValueError, match="like the images"):
        augmenter.with_targets(images, masks[:, :10])
    with pytest.raises(ValueError, match="one per image"):
        augmenter.with_targets(images, boxes=boxes[:-1])


def test_erasing_and_channel_shift_leave_the_targets_alone():
    images, masks, boxes = scene()
    augmenter = Augmenter(erasing=1.0, channel_shift=50, seed=4)
    _, new_masks, new_boxes, kept = augmenter.with_targets(images, masks, boxes)
    assert torch.equal(new_masks, masks)
    assert all(torch.equal(a, b) and torch.equal(k, torch.arange(len(b)))
               for a, b, k in zip(new_boxes, boxes, kept, strict=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_targets_on_the_gpu_match_the_cpu():
    images, masks, boxes = scene()
    config = AugmentConfig(**EVERYTHING, fill_mode="constant")
    cpu = Augmenter(config, seed=5).with_targets(images, masks, boxes)
    gpu = Augmenter(config, seed=5).with_targets(images.cuda(), masks.cuda(), [b.cuda() for b in boxes])
    assert torch.allclose(cpu[0], gpu[0].cpu(), atol=1e-2)
    assert (cpu[1] != gpu[1].cpu()).float().mean() < 1e-3  # nearest may round a tie the other way
    for a, b, ka, kb in zip(cpu[2], gpu[2], cpu[3], gpu[3]):
        assert torch.equal(ka, kb.cpu()) and torch.allclose(a, b.cpu(), atol=1e-4)
