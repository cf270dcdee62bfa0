"""Batched augmentation checked against torch's exact operations (rot90, roll, flip) and its own definitions."""

import pytest
import torch
import torch.nn.functional as F

from convkit.data import (
    AugmentConfig,
    Augmenter,
    affine_matrix,
    channel_shift,
    cutmix,
    mixed_cross_entropy,
    mixup,
    random_affine,
    random_crop,
    random_erasing,
    random_flip,
    warp,
)

N = 6


def images(h=28, w=28, c=3, low=0):
    return torch.randint(low, 256, (N, c, h, w), generator=torch.Generator().manual_seed(3)).float()


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def shift_theta(h, w, tx, ty):
    z = torch.zeros(N)
    return affine_matrix(h, w, z, torch.full((N,), float(tx)), torch.full((N,), float(ty)))


def test_identity_parameters_give_the_input_back_exactly():
    x = images()
    z, one = torch.zeros(N), torch.ones(N)
    assert torch.equal(warp(x, affine_matrix(28, 28, z, z, z, z, one, one)), x)
    assert torch.equal(random_affine(x, generator=gen()), x)
    out, ya, yb, lam = Augmenter(AugmentConfig(), seed=0)(x.to(torch.uint8), torch.arange(N))
    assert torch.equal(out, x) and torch.equal(ya, yb) and lam.eq(1).all()


@pytest.mark.parametrize("size", [(28, 28), (32, 32)])
@pytest.mark.parametrize("angle, k", [(90, 1), (-90, -1), (180, 2)])
def test_right_angle_rotation_equals_rot90(size, angle, k):
    x = images(*size)
    out = warp(x, affine_matrix(*size, torch.full((N,), float(angle)), torch.zeros(N), torch.zeros(N)), "constant")
    assert torch.allclose(out, torch.rot90(x, k, dims=(2, 3)), atol=1e-2)


def test_shift_equals_roll_with_the_fill_mode_at_the_border():
    x = images(20, 30)
    dx, dy = 3, -2  # content moves 3 right and 2 up
    rolled = torch.roll(x, (dy, dx), dims=(2, 3))
    wrap = warp(x, shift_theta(20, 30, dx, dy), "wrap")
    assert torch.equal(wrap.round(), rolled)  # wrap is a roll
    kept = (slice(None), slice(None), slice(0, 20 + dy), slice(dx, None))
    for mode in ("constant", "nearest", "reflect"):
        out = warp(x, shift_theta(20, 30, dx, dy), mode)
        assert torch.allclose(out[kept], rolled[kept], atol=1e-2), mode
    constant = warp(x, shift_theta(20, 30, dx, dy), "constant")
    assert constant[..., :dx].abs().max() < 1e-2 and constant[..., 20 + dy:, :].abs().max() < 1e-2
    filled = warp(x, shift_theta(20, 30, dx, dy), "constant", fill_value=100.0)
    assert torch.allclose(filled[..., :dx], torch.full_like(filled[..., :dx], 100.0), atol=1e-2)
    nearest = warp(x, shift_theta(20, 30, dx, 0), "nearest")
    assert torch.allclose(nearest[..., :dx], x[..., :1].expand(-1, -1, -1, dx), atol=1e-2)  # the edge repeated
    reflect = warp(x, shift_theta(20, 30, dx, 0), "reflect")
    assert torch.allclose(reflect[..., :dx], x[..., :dx].flip(-1), atol=1e-2)  # mirrored at the edge: cba|abc


def test_horizontal_and_vertical_flips_equal_torch_flip():
    x = images()
    out = random_flip(x, horizontal=True, generator=gen())
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x)]
    kept = [torch.equal(o, i) for o, i in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)
    out = random_flip(x, horizontal=False, vertical=True, generator=gen(1))
    assert all(torch.equal(o, i.flip(-2)) or torch.equal(o, i) for o, i in zip(out, x))


def test_seeded_augmentation_is_reproducible_and_resumable():
    config = AugmentConfig(rotation=20, width_shift=0.1, height_shift=2, shear=10, zoom=0.1, horizontal_flip=True,
                           channel_shift=20, fill_mode="reflect", crop_padding=2, erasing=0.5, mixup=0.4, cutmix=1.0)
    x, y = images().to(torch.uint8), torch.arange(N)
    a, b, c = Augmenter(config, seed=5), Augmenter(config, seed=5), Augmenter(config, seed=6)
    first = a(x, y)
    assert all(torch.equal(p, q) for p, q in zip(first, b(x, y)))
    assert not torch.equal(first[0], c(x, y)[0])
    state = a.state_dict()
    second = a(x, y)
    b.load_state_dict(state)
    assert all(torch.equal(p, q) for p, q in zip(second, b(x, y)))
    out = first[0]
    assert out.dtype == torch.float32 and out.shape == x.shape and 0 <= out.min() and out.max() <= 255


def test_random_crop_with_padding_shows_a_shifted_window():
    x = images(8, 8, c=1, low=1)
    assert torch.equal(random_crop(x, 0, generator=gen()), x)
    out = random_crop(x, 2, generator=gen())
    padded = F.pad(x, (2, 2, 2, 2))
    offsets = set()
    for i in range(N):
        hits = [(dy, dx) for dy in range(5) for dx in range(5) if torch.equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 8])]
        assert len(hits) == 1
        offsets.add(hits[0])
    assert len(offsets) > 1
    wrapped = random_crop(x, 3, fill_mode="wrap", generator=gen())
    assert all(any(torch.equal(w, torch.roll(i, (dy, dx), (1, 2))) for dy in range(-3, 4) for dx in range(-3, 4))
               for w, i in zip(wrapped, x))


def test_random_erasing_changes_only_a_rectangle():
    x = images(20, 24, low=1)  # no zeros, so the zero-filled rectangle is exactly where values changed
    out = random_erasing(x, p=1.0, scale=(0.05, 0.3), generator=gen())
    for o, i in zip(out, x):
        changed = (o != i).any(0)
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        box = changed[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        assert box.all() and changed.sum() == box.numel()  # the changed pixels form a full rectangle
        assert o[:, changed].eq(0).all()
        assert 0.04 <= box.numel() / (20 * 24) <= 0.35
    assert torch.equal(random_erasing(x, p=0.0, generator=gen()), x)
    square = random_erasing(x, p=1.0, scale=(0.1, 0.1), ratio=(1.0, 1.0), value=7.0, generator=gen())
    changed = (square != x).any(1)
    assert changed.flatten(1).sum(1).tolist() == [49] * N  # area 0.1 * 480 = 48, ratio 1: a 7 x 7 square
    assert square.permute(1, 0, 2, 3)[:, changed].eq(7).all()


def constant_images(h=10, w=12):
    """Image i is filled with the value 10 * (i + 1), its label is i: every pixel says where it came from."""
    return (torch.arange(N, dtype=torch.float32) + 1).mul(10).view(N, 1, 1, 1).expand(N, 2, h, w).clone(), torch.arange(N)


def test_mixup_blends_the_two_labelled_images_by_lam():
    x, y = constant_images()
    out, ya, yb, lam = mixup(x, y, alpha=0.4, generator=gen())
    assert lam.shape == (N,) and (lam >= 0).all() and (lam <= 1).all() and torch.equal(ya, y)
    expected = lam * 10 * (ya + 1) + (1 - lam) * 10 * (yb + 1)
    assert torch.allclose(out[:, :, 0, 0], expected[:, None].expand(N, 2), atol=1e-4)
    assert torch.allclose(out, out[:, :, :1, :1].expand_as(out))


def test_cutmix_lam_is_the_unchanged_area_fraction():
    x, y = constant_images(16, 20)
    out, ya, yb, lam = cutmix(x, y, alpha=1.0, generator=gen(2))
    assert ((lam >= 0) & (lam <= 1)).all()
    mixed_pairs = 0
    for o, a, b, share in zip(out, ya, yb, lam):
        own = o[0] == 10 * (a + 1)
        assert (own | (o[0] == 10 * (b + 1))).all()  # every pixel comes from one of the two labelled images
        if a != b:
            mixed_pairs += 1
            assert float(own.float().mean()) == pytest.approx(float(share), abs=1e-6)
            pasted = ~own
            if pasted.any():
                rows, cols = pasted.any(1).nonzero().flatten(), pasted.any(0).nonzero().flatten()
                assert pasted[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()  # a single box
    assert mixed_pairs > 0


def test_mixed_cross_entropy_reduces_to_cross_entropy_without_mixing():
    logits, y = torch.randn(N, 4), torch.randint(0, 4, (N,))
    assert torch.allclose(mixed_cross_entropy(logits, y, y, torch.ones(N)), F.cross_entropy(logits, y))
    yb, lam = (y + 1) % 4, torch.full((N,), 0.25)
    soft = 0.25 * F.one_hot(y, 4) + 0.75 * F.one_hot(yb, 4)
    assert torch.allclose(mixed_cross_entropy(logits, y, yb, lam), F.cross_entropy(logits, soft.float()))


def test_channel_shift_moves_each_channel_by_one_bounded_offset():
    x = images(low=0) * 0.5 + 60  # values in 60..187, so a shift of up to 50 never clips
    out = channel_shift(x, 50.0, generator=gen())
    delta = out - x
    per_channel = delta.flatten(2)
    assert torch.allclose(per_channel, per_channel[..., :1].expand_as(per_channel), atol=1e-4)
    assert delta.abs().max() <= 50 and delta[:, 0, 0, 0].unique().numel() == N
    assert channel_shift(torch.full((1, 1, 2, 2), 250.0), 50.0, gen()).max() <= 255


def test_bad_fill_mode_is_refused():
    with pytest.raises(ValueError, match="fill_mode must be one of constant, nearest, reflect, wrap"):
        AugmentConfig(fill_mode="mirror")
