"""Multi-crop views: shapes, crops inside the breast, augmentations that behave."""

import torch

from awm_lib.pretrain.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MultiCropConfig,
    _gaussian_blur,
    intensity_augment,
    mask_bounding_boxes,
    multi_crop,
    sample_crop_boxes,
    to_model_input,
)


def half_ellipse(B=3, H=96, W=80):
    """A breast-like convex mask: a half ellipse against the left edge, different per image."""
    yy, xx = torch.meshgrid(torch.arange(H).float() + 0.5, torch.arange(W).float() + 0.5, indexing="ij")
    masks = []
    for b in range(B):
        a, c = 40.0 + 8 * b, 38.0 - 3 * b  # semi-axes in x and y
        masks.append((xx / a) ** 2 + ((yy - H / 2) / c) ** 2 <= 1)
    masks = torch.stack(masks)
    images = torch.rand(B, 1, H, W) * masks[:, None]
    return images, masks


def test_bounding_boxes_of_masks():
    m = torch.zeros(1, 10, 12, dtype=torch.bool)
    m[0, 2:5, 3:9] = True
    assert mask_bounding_boxes(m).tolist() == [[3.0, 2.0, 9.0, 5.0]]


def test_crop_boxes_centred_on_tissue_inside_breast_box():
    _, masks = half_ellipse()
    g = torch.Generator().manual_seed(0)
    for scale in [(0.02, 0.15), (0.25, 1.0)]:
        boxes = sample_crop_boxes(masks, 20, scale, stride=2, generator=g)  # (B, 20, 4)
        bbox = mask_bounding_boxes(masks)
        assert boxes.shape == (3, 20, 4)
        eps = 1e-4
        assert (boxes[..., 0] >= bbox[:, None, 0] - eps).all() and (
            boxes[..., 2] <= bbox[:, None, 2] + eps
        ).all()
        assert (boxes[..., 1] >= bbox[:, None, 1] - eps).all() and (
            boxes[..., 3] <= bbox[:, None, 3] + eps
        ).all()
        cx = ((boxes[..., 0] + boxes[..., 2]) / 2).floor().long()
        cy = ((boxes[..., 1] + boxes[..., 3]) / 2).floor().long()
        for b in range(3):
            assert masks[b, cy[b], cx[b]].all(), "every crop centre is a breast pixel"
        # areas follow the requested scale of the breast box (capped by its shorter side)
        area = (boxes[..., 2] - boxes[..., 0]) ** 2
        frac = area / ((bbox[:, 2] - bbox[:, 0]) * (bbox[:, 3] - bbox[:, 1]))[:, None]
        assert (frac <= scale[1] + 1e-4).all() and (frac >= scale[0] - 1e-4).all()


def test_multi_crop_shapes_and_normalisation():
    images, masks = half_ellipse()
    cfg = MultiCropConfig(n_global=2, n_local=3, global_size=28, local_size=14)
    v = multi_crop(images, masks, cfg, torch.Generator().manual_seed(1))
    assert v.global_crops.shape == (2, 3, 3, 28, 28)
    assert v.local_crops.shape == (3, 3, 3, 14, 14)
    assert v.global_boxes.shape == (3, 2, 4) and v.local_boxes.shape == (3, 3, 4)
    # undo the normalisation: the three channels are the same grey image in [0, 1]
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    grey = v.local_crops * std + mean
    assert torch.allclose(grey[:, :, 0], grey[:, :, 1], atol=1e-5)
    assert grey.min() >= -1e-5 and grey.max() <= 1 + 1e-5
    # a reproducible draw
    v2 = multi_crop(images, masks, cfg, torch.Generator().manual_seed(1))
    assert torch.equal(v.global_crops, v2.global_crops)


def test_plain_crop_reproduces_the_source_pixels():
    # no rotation, no flip, no intensity change: a crop is the box's pixels, resampled 1:1
    H = W = 32
    img = torch.arange(H * W, dtype=torch.float32).view(1, 1, H, W) / (H * W)
    masks = torch.ones(1, H, W, dtype=torch.bool)
    cfg = MultiCropConfig(
        n_global=1,
        n_local=0,
        global_size=32,
        global_scale=(1.0, 1.0),
        flip_p=0.0,
        max_rotation_deg=0.0,
        gamma=(1.0, 1.0),
        window=0.0,
        noise_std=(0.0, 0.0),
        blur_p=0.0,
    )
    v = multi_crop(img, masks, cfg)
    grey = v.global_crops[0, 0, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    assert torch.allclose(grey, img[0, 0], atol=1e-5)
    # and with flip_p = 1 the crop is mirrored left-right
    cfg.flip_p = 1.0
    v = multi_crop(img, masks, cfg)
    grey = v.global_crops[0, 0, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    assert torch.allclose(grey, img[0, 0].flip(-1), atol=1e-5)


def test_blur_preserves_mean_and_sigma_zero_is_identity():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 20, 20)
    out = _gaussian_blur(x, torch.tensor([0.0, 0.5, 1.0, 1.5]), 1.5)
    assert torch.allclose(out[0], x[0], atol=1e-6)
    assert out[3].std() < x[3].std()  # smoother
    const = torch.full((2, 1, 10, 10), 0.3)
    assert torch.allclose(_gaussian_blur(const, torch.tensor([1.0, 1.5]), 1.5), const, atol=1e-6)


def test_intensity_augment_stays_in_range_and_varies_per_crop():
    x = torch.linspace(0, 1, 16 * 16).view(1, 1, 16, 16).repeat(6, 1, 1, 1)
    out = intensity_augment(x, MultiCropConfig(), torch.Generator().manual_seed(0))
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out[0], out[1])  # each crop gets its own draw
    # gamma only, gamma = 2: x -> x^2
    cfg = MultiCropConfig(gamma=(2.0, 2.0), window=0.0, noise_std=(0.0, 0.0), blur_p=0.0)
    assert torch.allclose(intensity_augment(x, cfg), x.clamp_min(1e-6) ** 2, atol=1e-6)


def test_to_model_input_shape():
    assert to_model_input(torch.zeros(5, 1, 14, 14)).shape == (5, 3, 14, 14)
