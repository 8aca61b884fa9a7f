"""Find the breast, crop to it, and turn it so the chest wall is on the left.

A mammogram is mostly background: black air, film borders, and bright
labels, letters ("R MLO") and markers that a model could learn as shortcuts.
:func:`segment_breast` keeps only the breast:

1. work on a small copy (long side ~512 px, block means): segmentation needs
   shape, not detail, and a 3518x2800 DICOM becomes 70x faster to process;
2. smooth, then threshold with Otsu's method (the grey level that best
   separates two classes, background and tissue);
3. cut thin bridges with a morphological opening and keep the **largest
   connected component**: labels and markers are small and separate;
4. fill holes (dark fatty tissue inside the breast is still breast);
5. decide the orientation: the chest wall is the side with more tissue
   (a breast is widest at the chest wall and thins to the nipple);
6. scale the bounding box back to original pixels, pad it, clip it.

The result, :class:`BreastCrop`, remembers the box and the flip, so boxes map
both ways exactly: :meth:`BreastCrop.to_crop` (original -> cropped & oriented)
and :meth:`BreastCrop.to_original` (back).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from awm_lib.errors import EmptyImageError, ImageTooSmallError

WORK_SIDE = 512  # long side of the working copy
PAD = 15  # pixels of margin around the breast box (the paper's implementation uses 15)
MIN_AREA_FRACTION = 0.01  # a "breast" smaller than 1% of the image is not one
MIN_SEGMENT_SIDE = 16  # under this (pixels, either side) there is nothing to segment


@dataclass(frozen=True)
class BreastCrop:
    """Where the breast is in an image, and how to crop and orient it.

    ``box`` is ``(x0, y0, x1, y1)`` in original pixels (integers; x1, y1
    exclusive, so ``pixels[y0:y1, x0:x1]`` is the crop). ``flipped`` is True
    when the crop is mirrored left-right so that the chest wall is on the left.
    ``mask`` is the breast mask on the working grid: each of its cells covers
    ``step x step`` original pixels.
    """

    box: tuple[int, int, int, int]
    flipped: bool
    mask: np.ndarray  # (h, w) bool on the working grid
    step: int
    image_shape: tuple[int, int]  # (H, W) of the original image

    @property
    def crop_shape(self) -> tuple[int, int]:
        x0, y0, x1, y1 = self.box
        return (y1 - y0, x1 - x0)

    def crop(self, pixels: np.ndarray) -> np.ndarray:
        """The breast region of ``pixels`` (H, W[, C]), mirrored when ``flipped``."""
        if tuple(pixels.shape[:2]) != self.image_shape:
            raise ValueError(
                f"pixels of shape {pixels.shape[:2]} do not match the segmented image {self.image_shape}"
            )
        x0, y0, x1, y1 = self.box
        out = pixels[y0:y1, x0:x1]
        return out[:, ::-1] if self.flipped else out

    def full_mask(self) -> np.ndarray:
        """(H, W) bool breast mask at the original resolution."""
        big = np.repeat(np.repeat(self.mask, self.step, axis=0), self.step, axis=1)
        H, W = self.image_shape
        out = np.zeros((H, W), dtype=bool)
        h, w = min(H, big.shape[0]), min(W, big.shape[1])
        out[:h, :w] = big[:h, :w]
        return out

    def to_crop(self, boxes) -> np.ndarray:
        """Map boxes (N, 4) xyxy from original pixels to the cropped, oriented image."""
        return boxes_to_crop(boxes, self.box, self.flipped)

    def to_original(self, boxes) -> np.ndarray:
        """Map boxes (N, 4) xyxy from the cropped, oriented image back to original pixels."""
        return boxes_to_original(boxes, self.box, self.flipped)

    def to_dict(self) -> dict:
        return {"box": list(self.box), "flipped": self.flipped, "image_shape": list(self.image_shape)}


def _as_boxes(boxes) -> np.ndarray:
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)  # (N, 4)


def boxes_to_crop(boxes, box, flipped: bool) -> np.ndarray:
    """Original-pixel boxes (N, 4) xyxy -> coordinates of ``image[y0:y1, x0:x1]``, mirrored if ``flipped``.

    Mirroring maps a point at x to ``w - x`` (w = crop width): pixel edges map to
    pixel edges, so the left edge of a box becomes the right edge of its mirror.
    """
    b = _as_boxes(boxes)
    x0, y0, x1, y1 = box
    out = b - np.array([x0, y0, x0, y0], dtype=np.float64)
    if flipped:
        w = x1 - x0
        out = np.stack([w - out[:, 2], out[:, 1], w - out[:, 0], out[:, 3]], axis=1)
    return out


def boxes_to_original(boxes, box, flipped: bool) -> np.ndarray:
    """The inverse of :func:`boxes_to_crop`."""
    b = _as_boxes(boxes)
    x0, y0, x1, y1 = box
    if flipped:
        w = x1 - x0
        b = np.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], axis=1)
    return b + np.array([x0, y0, x0, y0], dtype=np.float64)


def segment_breast(pixels: np.ndarray, pad: int = PAD, work_side: int = WORK_SIDE) -> BreastCrop:
    """Segment the breast in ``pixels`` (H, W) in [0, 1] (bright tissue); see the module doc.

    Raises :class:`EmptyImageError` when nothing breast-like is found, :class:`ImageTooSmallError` for an
    image under ``MIN_SEGMENT_SIDE`` pixels on a side.

    Explained in the book: chapter 1, *Mammograms and DICOM* (``notebooks/01_mammograms_and_dicom.ipynb``).
    """
    pixels = np.asarray(pixels)
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {pixels.shape}")
    H, W = pixels.shape
    if min(H, W) < MIN_SEGMENT_SIDE:  # a strip or an icon: any "breast box" would be made up
        raise ImageTooSmallError(
            f"{W}x{H} pixels is too small to segment a breast (each side must be at least "
            f"{MIN_SEGMENT_SIDE} px)"
        )
    step = max(1, int(np.ceil(max(H, W) / work_side)))
    small = _block_mean(pixels.astype(np.float32, copy=False), step)  # (h, w)
    small = ndimage.uniform_filter(small, size=3)  # tame film grain and quantum noise
    if not np.isfinite(small).all() or small.max() - small.min() < 1e-6:
        raise EmptyImageError("the image is constant: no breast to segment")

    mask = small > otsu_threshold(small)
    mask = _largest_component(mask)
    if mask.sum() < MIN_AREA_FRACTION * mask.size:
        raise EmptyImageError("no breast found (the brightest region is too small)")
    mask = ndimage.binary_fill_holes(mask)
    flipped = _chest_wall_on_right(mask)

    ys, xs = np.nonzero(mask)
    x0 = max(0, xs.min() * step - pad)
    y0 = max(0, ys.min() * step - pad)
    x1 = min(W, (xs.max() + 1) * step + pad)
    y1 = min(H, (ys.max() + 1) * step + pad)
    return BreastCrop(
        box=(int(x0), int(y0), int(x1), int(y1)),
        flipped=bool(flipped),
        mask=mask,
        step=step,
        image_shape=(H, W),
    )


def _block_mean(x: np.ndarray, step: int) -> np.ndarray:
    """Average ``step x step`` blocks (the last partial block is averaged over what exists)."""
    if step == 1:
        return x.copy()
    H, W = x.shape
    h, w = -(-H // step), -(-W // step)
    padded = np.pad(x, ((0, h * step - H), (0, w * step - W)), mode="edge")
    return padded.reshape(h, step, w, step).mean(axis=(1, 3))


def otsu_threshold(x: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the level of a ``bins``-bin histogram of ``x`` that maximises the between-class
    variance.

    The breast mask (here) and the blob proposer's pectoral-muscle cut
    (:mod:`awm_lib.proposals.blob`, 64 bins) both use it.
    """
    hist, edges = np.histogram(x, bins=bins, range=(float(x.min()), float(x.max())))
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)  # pixels at or below each level
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centers[int(np.argmax(between[:-1]))])


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """Open (to cut thin bridges to labels), keep the largest blob, and give back what opening ate."""
    opened = ndimage.binary_opening(mask, structure=np.ones((5, 5), dtype=bool))
    labels, n = ndimage.label(opened if opened.any() else mask)
    if n == 0:
        return np.zeros_like(mask)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    biggest = labels == int(np.argmax(sizes))
    # Undo the opening's erosion at the edges, without re-attaching separate blobs.
    return ndimage.binary_dilation(biggest, structure=np.ones((5, 5), dtype=bool)) & mask


def _chest_wall_on_right(mask: np.ndarray) -> bool:
    """True when the breast's tissue mass leans to the right within its own bounding box.

    The breast is attached to the body along the chest wall and is widest (tallest,
    in the image) there, narrowing to the nipple: the half of its box nearer the
    chest wall holds more of the mask. Using the breast's own box, not the image's
    halves, makes this work when the breast sits in the middle of the image.
    """
    cols = mask.sum(axis=0)  # (w,) breast height per column
    xs = np.nonzero(cols)[0]
    cols = cols[xs[0] : xs[-1] + 1].astype(np.float64)
    n = len(cols)
    left, right = cols[: n // 2].sum(), cols[n - n // 2 :].sum()
    return bool(right > left)
