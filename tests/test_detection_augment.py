"""Detection augmentation (issue 13): mosaic and scale-jitter move boxes, labels and instance masks with their
pixels. Truth comes from the images themselves: every object is painted in a colour of its own, so after
augmenting, each box must be the bounding box of its colour's pixels (exactly for mosaic, which copies pixels;
within a pixel where the warp interpolates); the mosaic is also rebuilt by plain slicing."""

import numpy as np
import pytest
import torch

from convkit.data import augment
from convkit.data.augment import AugmentConfig, Augmenter, AugmentError, mosaic
from convkit.errors import ConvkitError

H = W = 32


def scenes(n=4, seed=0, margin=0):
    """n images of 2x2 tiles of 16 px, most holding one rectangle of colour (id + 1, 100, 200) (id = label,
    unique in the batch); `margin` px kept free at each tile edge. Returns images, targets (with masks)."""
    rng = np.random.default_rng(seed)
    images = torch.zeros(n, 3, H, W, dtype=torch.uint8)
    targets, ident = [], 0
    for i in range(n):
        boxes, labels, masks = [], [], []
        for ty in (0, 16):
            for tx in (0, 16):
                if rng.random() < 0.2:
                    continue
                x1, y1 = (int(v) for v in rng.integers(margin, 16 - margin - 3, 2))
                x2, y2 = x1 + int(rng.integers(3, 16 - margin - x1 + 1)), y1 + int(rng.integers(3, 16 - margin - y1 + 1))
                x1, x2, y1, y2 = x1 + tx, x2 + tx, y1 + ty, y2 + ty
                images[i, :, y1:y2, x1:x2] = torch.tensor([ident + 1, 100, 200], dtype=torch.uint8).view(3, 1, 1)
                m = torch.zeros(H, W, dtype=torch.bool)
                m[y1:y2, x1:x2] = True
                boxes.append([x1, y1, x2, y2])
                labels.append(ident)
                masks.append(m)
                ident += 1
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
                        "labels": torch.tensor(labels, dtype=torch.int64),
                        "iscrowd": torch.tensor(labels, dtype=torch.int64) % 3 == 0,
                        "masks": torch.stack(masks) if masks else torch.zeros(0, H, W, dtype=torch.bool)})
    return images, targets


def bbox(pixels: torch.Tensor) -> list[float]:
    ys, xs = torch.nonzero(pixels, as_tuple=True)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def colour_ids(image: torch.Tensor) -> torch.Tensor:
    """(H, W) object id per pixel, -1 for background (exact colours only)."""
    ok = (image[1] == 100) & (image[2] == 200)
    return torch.where(ok, image[0].round().long() - 1, -1)


def draws(augmenter: Augmenter, n: int):
    """The mosaic draws `augmenter` will make next (on a copy of its generator)."""
    g = torch.Generator()
    g.set_state(augmenter.generator.get_state())
    return augment._mosaic_draws(n, H, W, augmenter.config.mosaic, g)


def test_mosaic_equals_the_four_quarters_pasted_by_slicing():
    images = torch.randint(0, 256, (3, 3, 8, 10), dtype=torch.uint8)
    sources = torch.tensor([[0, 1, 2, 0], [2, 2, 1, 0], [1, 1, 1, 1]])
    cy, cx = torch.tensor([3, 8, 0]), torch.tensor([4, 0, 0])
    out = mosaic(images, sources, cy, cx)
    h, w = 8, 10
    for i in range(3):
        y, x = int(cy[i]), int(cx[i])
        a, b, c, d = (images[int(s)] for s in sources[i])
        want = torch.zeros(3, h, w, dtype=torch.uint8)
        want[:, :y, :x] = a[:, h - y:, w - x:]
        want[:, :y, x:] = b[:, h - y:, :w - x]
        want[:, y:, :x] = c[:, :h - y, w - x:]
        want[:, y:, x:] = d[:, :h - y, :w - x]
        assert torch.equal(out[i], want)
    assert torch.equal(out[2], images[1])  # centre (0, 0): the bottom-right image, whole
    assert torch.equal(mosaic(images[:, 0], sources, cy, cx), out[:, 0])  # label maps alike


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mosaic_boxes_and_masks_are_exactly_their_colours_pixels(seed):
    images, targets = scenes(6, seed)
    augmenter = Augmenter(AugmentConfig(mosaic=1.0), seed=seed)
    sources, _, _ = draws(augmenter, 6)
    x, out = augmenter.detection(images, targets)
    assert sources[:, 1:].ne(torch.arange(6)[:, None]).any()  # real mosaics were drawn
    crowd = torch.cat([t["iscrowd"] for t in targets])
    for i, t in enumerate(out):
        ids = colour_ids(x[i])
        labels = t["labels"].tolist()
        assert set(labels) == set(ids.unique().tolist()) - {-1}  # every visible object has a box, no other
        for box, label, mask, is_crowd in zip(t["boxes"], labels, t["masks"], t["iscrowd"], strict=True):
            assert bbox(mask) == box.tolist()  # the mask's extent is the box, exactly
            assert bool((ids[mask] == label).all())  # the mask covers its colour's pixels
            if labels.count(label) == 1:  # the same image can show in two tiles: then two boxes share a colour
                assert bbox(ids == label) == box.tolist()
                assert torch.equal(mask, ids == label)
            assert bool(is_crowd) == bool(crowd[label])  # the crowd flag followed its box
        assert t["masks"].dtype == torch.bool and t["boxes"].dtype == torch.float32


def test_mosaic_boxes_against_boxes_shifted_and_clipped_by_hand_and_min_visibility():
    images, targets = scenes(4, 5)
    for min_vis in (0.0, 0.5, 0.9):
        augmenter = Augmenter(AugmentConfig(mosaic=1.0), seed=3)
        sources, cys, cxs = draws(augmenter, 4)
        _, out = augmenter.detection(images, targets, min_visibility=min_vis)
        for i in range(4):
            cy, cx = int(cys[i]), int(cxs[i])
            want = []
            for q, s in enumerate(sources[i].tolist()):
                dx, dy = cx - (W if q % 2 == 0 else 0), cy - (H if q < 2 else 0)
                for b, label in zip(targets[s]["boxes"].tolist(), targets[s]["labels"].tolist(), strict=True):
                    moved = [b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy]
                    clip = [max(moved[0], 0), max(moved[1], 0), min(moved[2], W), min(moved[3], H)]
                    cw, ch = clip[2] - clip[0], clip[3] - clip[1]
                    area = (moved[2] - moved[0]) * (moved[3] - moved[1])
                    if cw >= 1 and ch >= 1 and cw * ch >= min_vis * area:
                        want.append((label, clip))
            got = list(zip(out[i]["labels"].tolist(), out[i]["boxes"].tolist(), strict=True))
            assert got == want


@pytest.mark.parametrize("seed", [0, 1])
def test_scale_jitter_boxes_follow_the_pixels_within_a_pixel_and_keep_the_aspect(seed):
    images, targets = scenes(6, seed, margin=2)
    config = AugmentConfig(scale_jitter=(0.5, 1.5), fill_mode="constant", horizontal_flip=True)
    x, out = Augmenter(config, seed=seed).detection(images, targets)
    ratios = []
    for i, t in enumerate(out):
        img = x[i]
        covered = img[1] > 50  # more than half an object's pixel (objects are 100 in channel 1)
        ids = torch.where(covered, (img[0] * 100 / img[1].clamp(min=1)).round().long() - 1, -1)
        for box, label, mask in zip(t["boxes"], t["labels"].tolist(), t["masks"], strict=True):
            if mask.any():
                assert np.allclose(bbox(mask), box.tolist(), atol=1.0 + 1e-4)
            if box[2] - box[0] >= 2 and box[3] - box[1] >= 2:
                assert np.allclose(bbox(ids == label), box.tolist(), atol=1.0 + 1e-4)
            src = torch.cat([s["boxes"] for s in targets])[label]
            inside = box[0] > 0 and box[1] > 0 and box[2] < W and box[3] < H
            if inside:
                rx, ry = (box[2] - box[0]) / (src[2] - src[0]), (box[3] - box[1]) / (src[3] - src[1])
                assert abs(rx - ry) < 1e-4 and 0.5 - 1e-4 <= rx <= 1.5 + 1e-4
                ratios.append(float(rx))
        for label in set(ids.unique().tolist()) - {-1}:
            ext = bbox(ids == label)
            if ext[2] - ext[0] >= 3 and ext[3] - ext[1] >= 3:
                assert label in t["labels"].tolist()  # a clearly visible object kept its box
    assert max(ratios) - min(ratios) > 0.3  # the scales really vary


def test_mosaic_with_jitter_and_crop_keeps_masks_and_boxes_together():
    images, targets = scenes(5, 7)
    config = AugmentConfig(mosaic=0.7, scale_jitter=0.3, crop_padding=3, vertical_flip=True, rotation=5,
                           fill_mode="constant")
    _, out = Augmenter(config, seed=4).detection(images, targets, min_visibility=0.2)
    for t in out:
        assert len(t["boxes"]) == len(t["labels"]) == len(t["masks"]) == len(t["iscrowd"])
        for box, mask in zip(t["boxes"], t["masks"], strict=True):
            if mask.sum() > 4:
                assert np.allclose(bbox(mask), box.tolist(), atol=1.5)


def test_without_mosaic_detection_gives_with_targets_output_and_draws():
    images, targets = scenes(4, 2)
    config = AugmentConfig(horizontal_flip=True, zoom=0.2, crop_padding=2, scale_jitter=(0.8, 1.2))
    a, b = Augmenter(config, seed=9), Augmenter(config, seed=9)
    x, out = a.detection(images, targets)
    y, _, boxes, kept = b.with_targets(images, boxes=[t["boxes"] for t in targets])
    assert torch.equal(x, y)
    for t, bx, k, src in zip(out, boxes, kept, targets, strict=True):
        assert torch.equal(t["boxes"], bx) and torch.equal(t["labels"], src["labels"][k])
    assert torch.equal(a.generator.get_state(), b.generator.get_state())


def test_same_seed_same_output_and_resume_from_state():
    images, targets = scenes(4, 3)
    config = AugmentConfig(mosaic=0.5, scale_jitter=(0.6, 1.4), fill_mode="constant")
    a, b = Augmenter(config, seed=1), Augmenter(config, seed=1)
    xa, oa = a.detection(images, targets)
    xb, ob = b.detection(images, targets)
    assert torch.equal(xa, xb)
    assert all(torch.equal(p["boxes"], q["boxes"]) and torch.equal(p["masks"], q["masks"])
               for p, q in zip(oa, ob, strict=True))
    state = a.state_dict()
    x1, o1 = a.detection(images, targets)
    assert not torch.equal(x1, xa)  # the next batch differs
    b.load_state_dict(state)
    x2, o2 = b.detection(images, targets)
    assert torch.equal(x1, x2) and all(torch.equal(p["boxes"], q["boxes"]) for p, q in zip(o1, o2, strict=True))


def test_semantic_masks_follow_a_mosaic_in_with_targets():
    images, targets = scenes(4, 4)
    masks = colour_ids(images.float().permute(1, 0, 2, 3)).add(1).to(torch.uint8)  # (N, H, W) id + 1, 0 = none
    x, m, _, _ = Augmenter(AugmentConfig(mosaic=1.0), seed=0).with_targets(images, masks)
    assert torch.equal(m.long(), colour_ids(x.permute(1, 0, 2, 3)) + 1)


def test_refusals_name_what_is_wrong():
    images, targets = scenes(2, 0)
    with pytest.raises(AugmentError, match="mosaic") as err:  # classification: refused, not ignored
        Augmenter(AugmentConfig(mosaic=0.5))(images, torch.zeros(2, dtype=torch.long))
    assert isinstance(err.value, ConvkitError)
    with pytest.raises(ValueError, match="Augmenter.detection"):
        Augmenter(AugmentConfig(mosaic=0.5)).with_targets(images, boxes=[t["boxes"] for t in targets])
    with pytest.raises(AugmentError, match="--augment mosaic must be a probability"):
        AugmentConfig(mosaic=1.5)
    with pytest.raises(AugmentError, match="--augment scale_jitter"):
        AugmentConfig(scale_jitter=(1.5, 0.5))
    assert AugmentConfig(scale_jitter=[0.5, 2.0]).scale_jitter == (0.5, 2.0)
    bad = [dict(targets[0]), targets[1]]
    bad[0]["labels"] = bad[0]["labels"][:-1]
    with pytest.raises(ValueError, match=r"targets\[0\]\['labels'\]"):
        Augmenter(AugmentConfig(mosaic=1.0)).detection(images, bad)
    with pytest.raises(ValueError, match="mixup"):
        Augmenter(AugmentConfig(mixup=0.2)).detection(images, targets)


def test_images_without_objects_pass():
    images = torch.zeros(3, 3, H, W, dtype=torch.uint8)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    x, out = Augmenter(AugmentConfig(mosaic=1.0, scale_jitter=0.2), seed=0).detection(images, [empty] * 3)
    assert x.shape == (3, 3, H, W) and [len(t["boxes"]) for t in out] == [0, 0, 0]
    assert sorted(out[0]) == ["boxes", "labels"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: CPU/GPU agreement is checked on a GPU")
def test_cuda_gives_the_boxes_of_the_cpu():
    images, targets = scenes(6, 1)
    config = AugmentConfig(mosaic=0.8, scale_jitter=(0.5, 1.5), horizontal_flip=True, fill_mode="constant")
    c = Augmenter(config, seed=2)
    xc, oc = c.detection(images, targets)
    moved = [{k: v.cuda() for k, v in t.items()} for t in targets]
    g = Augmenter(config, seed=2)
    xg, og = g.detection(images.cuda(), moved)
    assert xg.is_cuda and torch.allclose(xg.cpu(), xc, atol=1e-3)
    for p, q in zip(oc, og, strict=True):
        assert torch.allclose(p["boxes"], q["boxes"].cpu(), atol=1e-4)
        assert torch.equal(p["labels"], q["labels"].cpu()) and torch.equal(p["masks"], q["masks"].cpu())
    assert torch.equal(g.generator.get_state(), c.generator.get_state())  # the same draws, whatever the device
