"""Preprocessing cache: hits, misses, invalidation, box mapping, packing."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from awm_lib.data.breast import segment_breast
from awm_lib.data.cache import PackedCache, PreprocessCache, pack
from awm_lib.data.dicom import write_mammo_dicom
from awm_lib.data.image import load_image


@pytest.fixture
def dicom_file(tmp_path, breast_phantom):
    stored, _ = breast_phantom(256, 200, chest_wall="right", bits=12)
    return write_mammo_dicom(tmp_path / "src" / "img.dicom", stored, laterality="R", view="CC")


def entries(root) -> list[str]:
    return sorted(p.name for p in root.glob("*.json"))


def test_miss_then_hit_with_identical_pixels(tmp_path, dicom_file):
    cache = PreprocessCache(tmp_path / "c", long_side=64)
    first = cache.get(dicom_file)
    second = cache.get(dicom_file)
    assert (cache.misses, cache.hits) == (1, 1)
    assert np.array_equal(first.pixels, second.pixels) and first.box == second.box
    assert max(first.pixels.shape) == 64 and first.pixels.dtype == np.float32
    assert first.flipped is True and first.laterality == "R" and first.view == "CC"
    fresh = PreprocessCache(tmp_path / "c", long_side=64)  # a new process would see the same files
    fresh.get(dicom_file)
    assert (fresh.misses, fresh.hits) == (0, 1)
    assert np.load(next((tmp_path / "c").glob("*.npy"))).dtype == np.uint16  # 12-bit source


def test_source_change_invalidates_and_replaces_the_entry(tmp_path, dicom_file):
    cache = PreprocessCache(tmp_path / "c", long_side=64)
    cache.get(dicom_file)
    old = entries(tmp_path / "c")
    st = dicom_file.stat()
    os.utime(dicom_file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # "edited" one second later
    cache.get(dicom_file)
    assert cache.misses == 2
    assert len(entries(tmp_path / "c")) == 1 and entries(tmp_path / "c") != old  # stale entry removed


def test_settings_change_is_a_miss(tmp_path, dicom_file):
    PreprocessCache(tmp_path / "c", long_side=64).get(dicom_file)
    other = PreprocessCache(tmp_path / "c", long_side=48)
    assert max(other.get(dicom_file).pixels.shape) == 48
    assert other.misses == 1


def test_entries_of_other_settings_are_kept(tmp_path, dicom_file):
    a, b = PreprocessCache(tmp_path / "c", long_side=64), PreprocessCache(tmp_path / "c", long_side=48)
    a.get(dicom_file)
    b.get(dicom_file)  # another run's settings: both entries stay (runs share the folder)
    a.get(dicom_file)
    assert (a.misses, a.hits) == (1, 1) and len(entries(tmp_path / "c")) == 2


def test_boxes_map_both_ways(tmp_path, dicom_file):
    cache = PreprocessCache(tmp_path / "c", long_side=64)
    prep = cache.get(dicom_file)
    crop = segment_breast(load_image(dicom_file).pixels)
    assert prep.box == crop.box
    x0, y0, x1, y1 = prep.box
    whole = prep.boxes_to_cache([[x0, y0, x1, y1]])[0]  # the crop box is the whole cached image
    np.testing.assert_allclose(whole, [0, 0, prep.pixels.shape[1], prep.pixels.shape[0]], atol=1e-9)
    boxes = np.array([[x0 + 10.0, y0 + 5.0, x0 + 30.0, y0 + 25.0], [x0 + 1.5, y0 + 2.5, x1 - 3.0, y1 - 4.0]])
    np.testing.assert_allclose(prep.boxes_to_original(prep.boxes_to_cache(boxes)), boxes, atol=1e-9)


def test_small_crops_are_not_upscaled_unless_asked(tmp_path, dicom_file):
    native = PreprocessCache(tmp_path / "a", long_side=4096).get(dicom_file)
    assert native.scale == (1.0, 1.0)
    big = PreprocessCache(tmp_path / "b", long_side=512, upscale=True).get(dicom_file)
    assert max(big.pixels.shape) == 512


def test_uint8_for_8bit_sources_and_packing(tmp_path, breast_phantom):
    srcs = {}
    for i, wall in enumerate(("left", "right")):
        pixels, _ = breast_phantom(128, 100, chest_wall=wall, bits=8, seed=i)
        srcs[f"im{i}"] = tmp_path / f"im{i}.png"
        Image.fromarray(pixels).save(srcs[f"im{i}"])
    cache = PreprocessCache(tmp_path / "c", long_side=64)
    cache.warm(list(srcs.values()), workers=1, progress=False)
    assert cache.misses == 2
    assert all(np.load(p).dtype == np.uint8 for p in (tmp_path / "c").glob("*.npy"))
    for codec in ("png", "j2k"):
        out = pack(srcs, tmp_path / f"pack-{codec}.zip", cache=cache, codec=codec, progress=False)
        packed = PackedCache(out)
        assert packed.names == ["im0", "im1"]
        for name, src in srcs.items():
            a, b = packed.get(name), cache.get(src)
            assert np.array_equal(a.pixels, b.pixels)  # lossless
            assert (a.box, a.flipped, a.scale) == (b.box, b.flipped, b.scale)
    assert cache.misses == 2  # packing reused the cache


def test_interrupted_write_leaves_no_entry(tmp_path, dicom_file, monkeypatch):
    import awm_lib.data.cache as cache_mod

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_mod, "write_json_atomic", boom)
    cache = PreprocessCache(tmp_path / "c", long_side=64)
    with pytest.raises(KeyboardInterrupt):
        cache.get(dicom_file)
    monkeypatch.undo()
    assert entries(tmp_path / "c") == [] and not list((tmp_path / "c").glob(".*tmp*"))
    cache.get(dicom_file)
    assert cache.misses == 2
