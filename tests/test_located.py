"""One rule for a "located" lesion (awm_lib.data.types.is_located), used by the dataset, the CLI and the
book."""

from pathlib import Path

import pytest

from awm_lib.data.mias import row_to_lesion
from awm_lib.data.types import Lesion, Sample, is_located, located


def test_mias_row_without_position_is_not_located_but_one_with_a_centre_is():
    somewhere = row_to_lesion({"cls": "CALC", "severity": "M", "x": None, "y": None, "radius": None})
    assert somewhere.box == (0.0, 0.0, 1024.0, 1024.0) and somewhere.center is None
    assert not is_located(somewhere, 1024, 1024)
    placed = row_to_lesion({"cls": "CIRC", "severity": "B", "x": 535, "y": 425, "radius": 197})
    assert is_located(placed, 1024, 1024)


def test_a_box_without_a_centre_is_located():
    # VinDr-Mammo findings are boxes without a centre: the "has a centre" rule would drop them all.
    vindr = Lesion(box=(100.0, 200.0, 180.0, 260.0), kind="Mass", malignant=True, birads=5)
    assert is_located(vindr, 3000, 2000)


def test_a_centred_lesion_whose_clipped_box_covers_the_image_is_still_located():
    # A large mass on a small image: the box clipped to the image is the whole image, but the
    # source gave its centre. The old "box under 90% of the image" rule dropped it.
    big = Lesion(box=(0.0, 0.0, 64.0, 64.0), kind="mass", malignant=True, center=(32.0, 32.0), radius=40.0)
    assert is_located(big, 64, 64)
    # the same box without a centre is the "somewhere in the image" placeholder
    assert not is_located(Lesion(box=(0.0, 0.0, 64.0, 64.0), kind="mass", malignant=True), 64, 64)


def test_located_uses_the_samples_size_or_asks_for_it():
    lesions = (
        Lesion(box=(0.0, 0.0, 50.0, 40.0), kind="CALC", malignant=True),  # whole image
        Lesion(box=(5.0, 5.0, 15.0, 15.0), kind="Mass", malignant=False),  # a real box
    )
    s = Sample(
        image_id="x", path=Path("x.png"), patient_id="p", label=1, lesions=lesions, height=40, width=50
    )
    assert located(s) == [lesions[1]]
    assert located(s, (100, 100)) == list(lesions)  # in a bigger image the first box is a real box too
    with pytest.raises(ValueError, match="shape"):
        located(Sample(image_id="y", path=Path("y.png"), patient_id="p", label=1, lesions=lesions))
