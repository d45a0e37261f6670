"""Training augmentation: image/mask alignment, seeding, value ranges and each documented range."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from anunet_core.augmentation import AugmentationConfig, augment_batch

SIDE = 64
# Every transform off: the augmentation must then be the identity.
NOTHING = AugmentationConfig(
    rotation_deg=0.0, scale=0.0, translation=0.0, contrast=0.0, brightness=0.0, gamma=0.0, noise_std=0.0, flip_prob=0.0
)


def only(**kwargs: float) -> AugmentationConfig:
    """A config with every transform off except those given."""
    return dataclasses.replace(NOTHING, **kwargs)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def coordinates(side: int = SIDE) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.meshgrid(torch.arange(side, dtype=torch.float32), torch.arange(side, dtype=torch.float32), indexing="ij")


def l_shape(batch: int, side: int = SIDE) -> torch.Tensor:
    """An L-shaped mask (no rotational or mirror symmetry), ``(batch, 1, side, side)`` float {0, 1}."""
    mask = torch.zeros(side, side)
    mask[16:48, 20:30] = 1.0  # the vertical bar
    mask[38:48, 30:46] = 1.0  # the foot, to the right
    return mask.expand(batch, 1, side, side).clone()


def disk(batch: int, radius: float = 16.0, side: int = SIDE) -> torch.Tensor:
    yy, xx = coordinates(side)
    centre = (side - 1) / 2
    mask = (((yy - centre) ** 2 + (xx - centre) ** 2) <= radius**2).float()
    return mask.expand(batch, 1, side, side).clone()


def image_of(mask: torch.Tensor, low: float = 0.1, high: float = 0.9) -> torch.Tensor:
    """A slice that is ``high`` on the mask and ``low`` elsewhere."""
    return low + (high - low) * mask


def random_image(batch: int, seed: int, low: float = 0.0, high: float = 1.0, side: int = SIDE) -> torch.Tensor:
    return low + (high - low) * torch.rand(batch, 1, side, side, generator=generator(seed))


def near_boundary(mask: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Pixels within ``radius`` of the mask's contour (where bilinear and nearest sampling may disagree)."""
    k = 2 * radius + 1
    dilated = F.max_pool2d(mask.float(), k, stride=1, padding=radius)
    eroded = -F.max_pool2d(-mask.float(), k, stride=1, padding=radius)
    return dilated != eroded


def centroids(mask: torch.Tensor) -> torch.Tensor:
    """``(B, 2)`` centroid (row, column) of each slice's mask, in pixels."""
    yy, xx = coordinates(mask.shape[-1])
    area = mask.sum(dim=(1, 2, 3))
    return torch.stack([(mask[:, 0] * yy).sum(dim=(1, 2)) / area, (mask[:, 0] * xx).sum(dim=(1, 2)) / area], dim=1)


def orientations_deg(mask: torch.Tensor) -> torch.Tensor:
    """``(B,)`` principal-axis angle of each slice's mask, in degrees (second moments)."""
    yy, xx = coordinates(mask.shape[-1])
    c = centroids(mask)
    dy = yy[None] - c[:, 0, None, None]
    dx = xx[None] - c[:, 1, None, None]
    m = mask[:, 0]
    mu20, mu02, mu11 = (m * dx * dx).sum(dim=(1, 2)), (m * dy * dy).sum(dim=(1, 2)), (m * dx * dy).sum(dim=(1, 2))
    return torch.rad2deg(0.5 * torch.atan2(2 * mu11, mu20 - mu02))


def areas(mask: torch.Tensor) -> torch.Tensor:
    return mask.sum(dim=(1, 2, 3))


# --- alignment -------------------------------------------------------------------------------

STRONG = AugmentationConfig(rotation_deg=30.0, scale=0.2, translation=0.1)


@pytest.mark.parametrize(
    "config",
    [AugmentationConfig(), STRONG, dataclasses.replace(STRONG, flip_prob=0.5)],
    ids=["default", "strong", "strong-flips"],
)
def test_mask_stays_on_the_bright_region(config: AugmentationConfig) -> None:
    masks = l_shape(32)
    images = image_of(masks)
    out_images, out_masks = augment_batch(images, masks, generator(1), config)

    assert set(out_masks.unique().tolist()) <= {0.0, 1.0}
    # The intensity jitter keeps the organ (0.9) above 0.45 and the background (0.1, or 0
    # outside the slice) below: contrast <= 15 %, brightness <= 0.05, gamma in [0.82, 1.22],
    # noise std <= 0.02 (4,096 pixels a slice: under 5 sigma = 0.1).
    bright = out_images > 0.45
    away = ~near_boundary(out_masks)
    assert torch.equal(bright[away], out_masks.bool()[away])
    # the contour band is thin, and the whole masks agree with the bright regions
    intersection = (bright & out_masks.bool()).sum(dim=(1, 2, 3)).float()
    union = (bright | out_masks.bool()).sum(dim=(1, 2, 3)).float()
    assert (intersection / union).min() > 0.85
    # and the slices did move: this is not the identity
    moved = (out_masks != masks).flatten(1).any(dim=1)
    assert moved.sum() >= 30


def test_mask_follows_an_image_that_encodes_position() -> None:
    # Intensity jitter off: each pixel's intensity says where it came from (row and column
    # ramps in two images through the same seed), and the mask must be the same pixels.
    rows, cols = coordinates()
    masks = l_shape(16)
    config = only(rotation_deg=25.0, scale=0.15, translation=0.08)
    row_image = (rows / (SIDE - 1)).expand(16, 1, SIDE, SIDE).clone()
    col_image = (cols / (SIDE - 1)).expand(16, 1, SIDE, SIDE).clone()
    out_rows, out_masks = augment_batch(row_image, masks, generator(5), config)
    out_cols, out_masks_again = augment_batch(col_image, masks, generator(5), config)
    assert torch.equal(out_masks, out_masks_again)

    ones = torch.ones_like(row_image)
    out_ones, _ = augment_batch(ones, masks, generator(5), config)
    inside = (out_ones - 1).abs() < 1e-5  # samples whose four bilinear neighbours are all inside the slice
    # A bilinear sample of a ramp is its source coordinate; rounding it gives the pixel that
    # nearest-neighbour sampling took, except at exact ties (x.5), which are left out.
    source_row, source_col = out_rows * (SIDE - 1), out_cols * (SIDE - 1)
    tie = ((source_row % 1 - 0.5).abs() < 1e-3) | ((source_col % 1 - 0.5).abs() < 1e-3)
    compared = inside & ~tie
    assert compared.sum() > 16 * SIDE * SIDE // 2
    looked_up = masks[0, 0][source_row.round().long(), source_col.round().long()]
    assert torch.equal(looked_up[compared], out_masks[compared])


# --- seeding ---------------------------------------------------------------------------------


def test_same_seed_same_output_and_global_rng_is_not_used() -> None:
    masks = l_shape(8)
    images = random_image(8, seed=3)
    torch.manual_seed(123)
    first = augment_batch(images, masks, generator(7))
    torch.manual_seed(456)  # a different global state must not matter
    torch.rand(10)
    second = augment_batch(images, masks, generator(7))
    assert torch.equal(first[0], second[0])
    assert torch.equal(first[1], second[1])


def test_different_seed_or_advanced_generator_differs() -> None:
    masks = l_shape(8)
    images = random_image(8, seed=3)
    a = augment_batch(images, masks, generator(7))
    b = augment_batch(images, masks, generator(8))
    assert not torch.equal(a[0], b[0])
    assert not torch.equal(a[1], b[1])
    g = generator(7)
    first, second = augment_batch(images, masks, g), augment_batch(images, masks, g)
    assert torch.equal(first[0], a[0])
    assert not torch.equal(second[0], first[0])


def test_inputs_are_not_modified() -> None:
    masks = l_shape(4)
    images = random_image(4, seed=2)
    before = images.clone(), masks.clone()
    augment_batch(images, masks, generator(0), STRONG)
    assert torch.equal(images, before[0]) and torch.equal(masks, before[1])


# --- shapes, dtypes, ranges ------------------------------------------------------------------


@pytest.mark.parametrize("image_dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("mask_dtype", [torch.float32, torch.uint8, torch.int64, torch.bool])
def test_shapes_and_dtypes_are_kept(image_dtype: torch.dtype, mask_dtype: torch.dtype) -> None:
    masks = l_shape(3).to(mask_dtype)
    images = random_image(3, seed=4).to(image_dtype)
    out_images, out_masks = augment_batch(images, masks, generator(0))
    assert out_images.shape == (3, 1, SIDE, SIDE) and out_images.dtype == image_dtype
    assert out_masks.shape == (3, 1, SIDE, SIDE) and out_masks.dtype == mask_dtype
    assert set(out_masks.float().unique().tolist()) <= {0.0, 1.0}
    assert out_masks.float().sum() > 0


@pytest.mark.parametrize("shape", [(1, 1, 32, 32), (5, 1, 48, 80), (2, 1, 16, 96)])
def test_any_batch_and_side(shape: tuple[int, ...]) -> None:
    masks = (torch.rand(shape, generator=generator(1)) > 0.5).float()
    out_images, out_masks = augment_batch(torch.rand(shape, generator=generator(2)), masks, generator(3))
    assert out_images.shape == shape and out_masks.shape == shape


def test_images_stay_in_unit_range_even_when_pushed_hard() -> None:
    images = random_image(32, seed=9)
    images[:, :, :8] = 1.0
    images[:, :, -8:] = 0.0
    masks = l_shape(32)
    config = AugmentationConfig(contrast=0.9, brightness=0.5, gamma=1.0, noise_std=0.3)
    out_images, _ = augment_batch(images, masks, generator(0), config)
    assert torch.isfinite(out_images).all()
    assert out_images.min() == 0.0 and out_images.max() == 1.0  # clamped, and the clamp was hit


def test_default_config_keeps_unit_range() -> None:
    out_images, _ = augment_batch(random_image(16, seed=11), l_shape(16), generator(2))
    assert out_images.min() >= 0.0 and out_images.max() <= 1.0


@pytest.mark.parametrize(
    "images,masks",
    [
        (torch.zeros(1, 32, 32), torch.zeros(1, 32, 32)),
        (torch.zeros(2, 1, 32, 32), torch.zeros(2, 1, 32, 16)),
        (torch.zeros(2, 1, 32, 32), torch.zeros(1, 1, 32, 32)),
    ],
)
def test_bad_shapes_raise(images: torch.Tensor, masks: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        augment_batch(images, masks, generator(0))


# --- each documented range -------------------------------------------------------------------


def test_defaults_are_the_documented_ones() -> None:
    assert AugmentationConfig() == AugmentationConfig(
        rotation_deg=10.0, scale=0.1, translation=0.06, contrast=0.15, brightness=0.05, gamma=0.2, noise_std=0.02, flip_prob=0.0
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        AugmentationConfig().scale = 0.5  # type: ignore[misc]


def test_everything_off_is_the_identity() -> None:
    images = random_image(8, seed=1)
    masks = l_shape(8)
    out_images, out_masks = augment_batch(images, masks, generator(0), NOTHING)
    torch.testing.assert_close(out_images, images, atol=1e-5, rtol=0)
    assert torch.equal(out_masks, masks)


def test_brightness_is_one_shift_per_slice_within_range() -> None:
    images = random_image(64, seed=1, low=0.1, high=0.9)
    out_images, _ = augment_batch(images, l_shape(64), generator(0), only(brightness=0.05))
    shift = (out_images - images).flatten(1)
    per_slice = shift.mean(dim=1)
    assert (shift - per_slice[:, None]).abs().max() < 1e-5
    assert per_slice.abs().max() <= 0.05 + 1e-5
    assert per_slice.max() > 0.025 and per_slice.min() < -0.025  # both signs, the range is used


def test_contrast_scales_around_the_slice_mean_within_range() -> None:
    images = random_image(64, seed=1, low=0.2, high=0.8)
    out_images, _ = augment_batch(images, l_shape(64), generator(0), only(contrast=0.15))
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    factor = ((out_images - mean) * (images - mean)).sum(dim=(1, 2, 3)) / (images - mean).square().sum(dim=(1, 2, 3))
    predicted = (images - mean) * factor.view(-1, 1, 1, 1) + mean
    torch.testing.assert_close(out_images, predicted, atol=1e-5, rtol=0)
    assert ((factor - 1).abs() <= 0.15 + 1e-5).all()
    assert factor.max() > 1.075 and factor.min() < 0.925
    # the slice mean is kept
    torch.testing.assert_close(out_images.mean(dim=(1, 2, 3)), mean.flatten(), atol=1e-5, rtol=0)


def test_gamma_is_one_power_per_slice_within_range() -> None:
    images = random_image(64, seed=1, low=0.05, high=0.95)
    out_images, _ = augment_batch(images, l_shape(64), generator(0), only(gamma=0.2))
    exponent = torch.log(out_images) / torch.log(images)
    per_slice = exponent.flatten(1).median(dim=1).values
    torch.testing.assert_close(exponent, per_slice.view(-1, 1, 1, 1).expand_as(exponent), atol=1e-3, rtol=0)
    log_gamma = torch.log(per_slice)
    assert log_gamma.abs().max() <= 0.2 + 1e-4
    assert log_gamma.max() > 0.1 and log_gamma.min() < -0.1


def test_noise_is_zero_mean_with_std_within_range() -> None:
    images = torch.full((64, 1, SIDE, SIDE), 0.5)
    out_images, _ = augment_batch(images, l_shape(64), generator(0), only(noise_std=0.02))
    residual = (out_images - images).flatten(1)
    std = residual.std(dim=1)
    # a sample std of 4,096 values is within ~5 % of the true one
    assert std.max() <= 0.02 * 1.05
    assert std.max() > 0.015 and std.min() < 0.005  # each slice draws its own std in [0, 0.02]
    assert (residual.mean(dim=1).abs() <= 5 * std / SIDE + 1e-7).all()


def test_translation_stays_within_the_fraction_of_the_side() -> None:
    masks = torch.zeros(64, 1, SIDE, SIDE)
    masks[:, :, 28:36, 28:36] = 1.0
    _, out_masks = augment_batch(image_of(masks), masks, generator(0), only(translation=0.06))
    offset = centroids(out_masks) - centroids(masks)
    bound = 0.06 * SIDE  # 3.84 px
    assert offset.abs().max() <= bound + 0.5
    assert offset[:, 0].abs().max() > bound / 2 and offset[:, 1].abs().max() > bound / 2
    assert torch.equal(areas(out_masks), areas(masks))  # a shift keeps the square whole


def test_rotation_stays_within_its_angle() -> None:
    masks = torch.zeros(64, 1, SIDE, SIDE)
    masks[:, :, 28:36, 12:52] = 1.0  # a horizontal bar: orientation 0
    _, out_masks = augment_batch(image_of(masks), masks, generator(0), only(rotation_deg=10.0))
    angle = orientations_deg(out_masks)
    assert angle.abs().max() <= 10.0 + 1.0
    assert angle.max() > 5.0 and angle.min() < -5.0
    torch.testing.assert_close(centroids(out_masks), centroids(masks), atol=0.6, rtol=0)  # about the centre
    ratio = areas(out_masks) / areas(masks)
    assert ((ratio - 1).abs() < 0.05).all()  # a rotation keeps the area


def test_scale_stays_within_its_range() -> None:
    masks = disk(64, radius=16.0)
    _, out_masks = augment_batch(image_of(masks), masks, generator(0), only(scale=0.1))
    ratio = areas(out_masks) / areas(masks)
    # zoom in [0.9, 1.1] scales the area by zoom**2 in [0.81, 1.21] (a few pixels of rounding)
    assert ratio.min() >= 0.81 - 0.03 and ratio.max() <= 1.21 + 0.03
    assert ratio.min() < 0.9 and ratio.max() > 1.1


def test_no_flips_by_default_laterality_is_kept() -> None:
    masks = torch.zeros(64, 1, SIDE, SIDE)
    masks[:, :, 24:40, 6:22] = 1.0  # an organ on the image's left
    _, out_masks = augment_batch(image_of(masks), masks, generator(0))
    assert (centroids(out_masks)[:, 1] < SIDE / 2 - 8).all()


def test_flip_probability_one_flips_both_axes() -> None:
    images = random_image(4, seed=2)
    masks = l_shape(4)
    out_images, out_masks = augment_batch(images, masks, generator(0), only(flip_prob=1.0))
    torch.testing.assert_close(out_images, torch.flip(images, dims=(2, 3)), atol=1e-5, rtol=0)
    assert torch.equal(out_masks, torch.flip(masks, dims=(2, 3)))


def test_flip_probability_half_flips_each_axis_independently() -> None:
    n = 200
    images = random_image(n, seed=2)
    masks = l_shape(n)
    out_images, out_masks = augment_batch(images, masks, generator(0), only(flip_prob=0.5))
    candidates = {
        (False, False): images,
        (True, False): torch.flip(images, dims=(3,)),  # left-right
        (False, True): torch.flip(images, dims=(2,)),  # up-down
        (True, True): torch.flip(images, dims=(2, 3)),
    }
    kinds = []
    for b in range(n):
        matches = [k for k, c in candidates.items() if torch.allclose(out_images[b], c[b], atol=1e-5, rtol=0)]
        assert len(matches) == 1, f"slice {b} is not exactly one of the four flips"
        kinds.append(matches[0])
        flip_dims = [d for d, on in zip((3, 2), matches[0]) if on]
        expected_mask = torch.flip(masks[b], dims=[d - 1 for d in flip_dims]) if flip_dims else masks[b]
        assert torch.equal(out_masks[b], expected_mask)
    left_right = sum(k[0] for k in kinds) / n
    up_down = sum(k[1] for k in kinds) / n
    assert 0.35 < left_right < 0.65 and 0.35 < up_down < 0.65
    assert len(set(kinds)) == 4


def test_a_single_flip_with_rotation_is_still_rigid() -> None:
    masks = disk(64, radius=16.0)
    config = only(rotation_deg=30.0, flip_prob=0.5)
    _, out_masks = augment_batch(image_of(masks), masks, generator(0), config)
    ratio = areas(out_masks) / areas(masks)
    # a rotation, with or without a mirror, keeps a disk's area (a few contour pixels aside)
    assert ((ratio - 1).abs() < 0.03).all(), f"area ratios up to {ratio.max():.2f}"


def test_rotation_without_flips_is_rigid() -> None:
    # the control for the test above: the same disk and rotations, no flips
    masks = disk(64, radius=16.0)
    _, out_masks = augment_batch(image_of(masks), masks, generator(0), only(rotation_deg=30.0))
    ratio = areas(out_masks) / areas(masks)
    assert ((ratio - 1).abs() < 0.03).all()
    assert math.isclose(float(ratio.mean()), 1.0, abs_tol=0.01)
