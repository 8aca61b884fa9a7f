"""Full-image baseline: aspect-kept resize to the long side, padded to the patch grid."""

import pytest
import torch

from awm_lib.model.backbone import BackboneConfig, save_tiny_dinov2
from awm_lib.model.baseline import FullImageClassifier, FullImageConfig, canvas_boxes
from awm_lib.model.crops import normalise


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(save_tiny_dinov2(tmp_path_factory.mktemp("tiny_dinov2")))


def make(tiny_dir, **kw):
    torch.manual_seed(0)
    return FullImageClassifier(FullImageConfig(backbone=BackboneConfig(name_or_path=tiny_dir), **kw))


def test_canvas_boxes_by_hand():
    boxes = torch.tensor([[0.0, 0.0, 50.0, 100.0], [10.0, 20.0, 110.0, 70.0]])
    sample, (h, w) = canvas_boxes(boxes, long_side=56, patch_size=14)
    # image 0: 100 tall -> scale 0.56 -> 56 x 28; image 1: 100 wide -> 28 x 56; canvas 56 x 56
    assert (h, w) == (56, 56)
    assert torch.allclose(sample[0], torch.tensor([0.0, 0.0, 100.0, 100.0]))
    assert torch.allclose(sample[1], torch.tensor([10.0, 20.0, 110.0, 120.0]))


def test_whole_image_at_its_own_size_is_just_normalised(tiny_dir):
    model = make(tiny_dir, long_side=28)
    img = torch.rand(2, 1, 28, 28)
    cfg = model.backbone.cfg
    assert torch.allclose(model.prepare(img), normalise(img, cfg.pixel_mean, cfg.pixel_std), atol=1e-5)


def test_outside_the_breast_box_is_background(tiny_dir):
    model = make(tiny_dir, long_side=56)
    img = torch.ones(1, 1, 100, 80)
    x = model.prepare(img, torch.tensor([[0.0, 0.0, 40.0, 100.0]]))  # 100 x 40 -> 56 x 22.4
    assert x.shape == (1, 3, 56, 28)  # width rounded up to the patch grid
    zero = normalise(torch.zeros(1, 1, 1, 1), model.backbone.cfg.pixel_mean, model.backbone.cfg.pixel_std)
    assert torch.allclose(x[0, :, :, 23:], zero[0].expand(3, 56, 5), atol=1e-6)  # padding
    one = normalise(torch.ones(1, 1, 1, 1), model.backbone.cfg.pixel_mean, model.backbone.cfg.pixel_std)
    assert torch.allclose(x[0, :, :, :22], one[0].expand(3, 56, 22), atol=1e-5)  # the breast
    assert model.num_tokens(100, 40) == 4 * 2 + 1


def test_forward_and_gradient(tiny_dir):
    model = make(tiny_dir, long_side=42, pooling="mean")
    logits = model(torch.rand(2, 1, 60, 50))
    assert logits.shape == (2,)
    logits.sum().backward()
    assert model.backbone.model.embeddings.patch_embeddings.projection.weight.grad is not None


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_a_prediction_does_not_depend_on_the_rest_of_its_batch(tiny_dir, pooling):
    """Issue 14: padding tokens are masked and each image keeps its own position grid."""
    model = make(tiny_dir, long_side=56, pooling=pooling).eval()
    g = torch.Generator().manual_seed(0)
    tall, wide = torch.rand(1, 1, 100, 40, generator=g), torch.rand(1, 1, 100, 40, generator=g)
    boxes = torch.tensor(
        [[0.0, 0.0, 40.0, 100.0], [0.0, 0.0, 40.0, 30.0]]
    )  # 56 x 22.4 px and 42 x 56 px: canvas 56 x 56
    with torch.no_grad():
        alone = torch.cat([model(tall, boxes[:1]), model(wide, boxes[1:])])
        together = model(torch.cat([tall, wide]), boxes)
        pixels, grids = model.prepare(torch.cat([tall, wide]), boxes, return_grids=True)
    assert tuple(pixels.shape[-2:]) == (56, 56) and grids.tolist() == [[4, 2], [3, 4]]  # patches (rows, cols)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)


def test_encode_without_padding_is_the_plain_dinov2_forward(tiny_dir):
    model = make(tiny_dir, long_side=42).eval()
    pixels, grids = model.prepare(torch.rand(2, 1, 60, 50), return_grids=True)
    with torch.no_grad():
        cls, patches, valid = model.encode(pixels, grids)
        ref = model.backbone.forward_tokens(pixels)
    assert bool(valid.all())
    torch.testing.assert_close(cls, ref.cls, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(patches, ref.patches, atol=1e-5, rtol=1e-4)
