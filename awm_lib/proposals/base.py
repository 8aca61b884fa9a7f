"""What a proposer is: one image in, boxes with scores out.

The method's first step asks "where should the model look?". Every answer in
this library -- a real detector (Grounding DINO), the training-free blob
detector, the oracle, random boxes or none at all -- has the same small shape:

    proposer.propose(image, mask=None) -> Proposals

with ``image`` a ``(H, W)`` float32 array in ``[0, 1]`` (dark background,
bright tissue) and ``mask`` an optional ``(H, W)`` bool breast mask. The boxes
are ``xyxy`` in pixels of *that* image, highest score first. What happens next
(NMS, top-k, the anchor, squaring) is the same for every proposer and lives in
:mod:`awm_lib.proposals.select`.

:func:`make_proposer` builds one by name: ``"blob"``, ``"gdino"``,
``"oracle"``, ``"random"``, ``"none"``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from awm_lib.data.breast import segment_breast
from awm_lib.errors import ConfigError, EmptyImageError, ProposalError
from awm_lib.proposals.boxes import as_boxes


@dataclass
class Proposals:
    """Boxes ``(N, 4)`` float32 ``xyxy`` pixels and their scores ``(N,)``, best first.

    ``labels`` optionally names what each box is thought to be (``"mass"``,
    ``"calcification"``, a detector's text phrase); ``image_size`` is ``(H, W)``.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: list[str] | None = None
    image_size: tuple[int, int] | None = None

    def __post_init__(self):
        self.boxes = as_boxes(self.boxes)
        self.scores = torch.as_tensor(self.scores, dtype=torch.float32).reshape(-1)
        if self.scores.shape[0] != self.boxes.shape[0]:
            raise ProposalError(f"{self.boxes.shape[0]} boxes but {self.scores.shape[0]} scores")
        if self.labels is not None and len(self.labels) != len(self.scores):
            raise ProposalError(f"{len(self.scores)} boxes but {len(self.labels)} labels")

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @classmethod
    def empty(cls, image_size: tuple[int, int] | None = None) -> Proposals:
        return cls(torch.zeros(0, 4), torch.zeros(0), labels=[], image_size=image_size)

    def sorted(self) -> Proposals:
        """A copy sorted by score, highest first (stable, so ties keep their order)."""
        order = torch.sort(self.scores, descending=True, stable=True).indices
        return self.take(order)

    def take(self, index) -> Proposals:
        """The proposals at ``index`` (indices or a bool mask), in that order."""
        index = torch.as_tensor(index)
        if index.dtype == torch.bool:
            index = index.nonzero().reshape(-1)
        labels = None if self.labels is None else [self.labels[i] for i in index.tolist()]
        return Proposals(self.boxes[index], self.scores[index], labels, self.image_size)


@runtime_checkable
class Proposer(Protocol):
    """Anything with ``propose`` / ``propose_batch`` and a ``settings()`` dict (for caching)."""

    name: str

    def propose(self, image, mask=None) -> Proposals: ...

    def propose_batch(self, images, masks=None) -> list[Proposals]: ...

    def settings(self) -> dict[str, Any]: ...


class BaseProposer:
    """Shared plumbing: input checks, a default ``propose_batch`` loop, ``settings()``.

    Subclasses are dataclasses (their fields are their settings) and implement
    ``_propose(image: np.ndarray (H, W) float32, mask: np.ndarray (H, W) bool | None)``.
    """

    name = "base"
    needs_ground_truth = False  # only the oracle needs the lesions

    def propose(self, image, mask=None) -> Proposals:
        img, m = check_image(image, mask)
        props = self._propose(img, m)
        props.image_size = img.shape
        return props.sorted()

    def propose_batch(self, images, masks=None) -> list[Proposals]:
        masks = [None] * len(images) if masks is None else masks
        return [self.propose(im, m) for im, m in zip(images, masks)]

    def settings(self) -> dict[str, Any]:
        out = {"proposer": self.name}
        if dataclasses.is_dataclass(self):
            for f in dataclasses.fields(self):
                v = getattr(self, f.name)
                if isinstance(v, (int, float, str, bool, type(None), tuple, list)):
                    out[f.name] = v
        return out

    def _propose(self, image: np.ndarray, mask: np.ndarray | None) -> Proposals:  # pragma: no cover
        raise NotImplementedError


def check_image(image, mask=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate a ``(H, W)`` image in ``[0, 1]`` and its optional mask; return numpy arrays.

    Raises :class:`ProposalError` for a wrong shape and :class:`EmptyImageError`
    for a constant image or an all-False mask (no breast tissue to look at).
    """
    img = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    img = np.squeeze(img)
    if img.ndim != 2:
        raise ProposalError(f"expected one grey (H, W) image, got shape {np.shape(image)}")
    img = img.astype(np.float32, copy=False)
    if not np.isfinite(img).all():
        raise ProposalError("image has NaN or inf pixels; load it with awm_lib.data.image.load_image")
    if img.size == 0 or float(img.max() - img.min()) <= 1e-6:
        raise EmptyImageError("image is constant: no breast tissue to propose boxes in")
    m = None
    if mask is not None:
        m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        m = np.squeeze(m).astype(bool)
        if m.shape != img.shape:
            raise ProposalError(f"mask shape {m.shape} differs from image shape {img.shape}")
        if not m.any():
            raise EmptyImageError("breast mask is empty: no breast tissue to propose boxes in")
    return img, m


def breast_mask(image: np.ndarray) -> np.ndarray:
    """The breast mask from the data layer's segmentation (used when none is given)."""
    return np.asarray(segment_breast(image).full_mask(), dtype=bool)


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Bounding box ``xyxy`` of a bool mask (pixel edges: a 1-pixel mask at (0,0) is (0,0,1,1))."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise EmptyImageError("breast mask is empty: no breast tissue")
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


# --- registry ---------------------------------------------------------------
_REGISTRY = {
    "blob": ("awm_lib.proposals.blob", "BlobProposer"),
    "gdino": ("awm_lib.proposals.gdino", "GroundingDinoProposer"),
    "oracle": ("awm_lib.proposals.simple", "OracleProposer"),
    "random": ("awm_lib.proposals.simple", "RandomProposer"),
    "none": ("awm_lib.proposals.simple", "NoProposer"),
}
PROPOSER_NAMES = tuple(_REGISTRY)


def make_proposer(name: str, **kwargs) -> BaseProposer:
    """Build a proposer by name; ``kwargs`` are its dataclass fields.

    >>> make_proposer("blob", max_boxes=20)  # doctest: +SKIP
    """
    import importlib

    if name not in _REGISTRY:
        raise ConfigError(f"unknown proposer {name!r}; choose one of {', '.join(PROPOSER_NAMES)}")
    module, cls = _REGISTRY[name]
    klass = getattr(importlib.import_module(module), cls)
    valid = {f.name for f in dataclasses.fields(klass)}
    bad = sorted(set(kwargs) - valid)
    if bad:
        raise ConfigError(f"proposer {name!r} has no setting(s) {bad}; valid: {sorted(valid)}")
    return klass(**kwargs)


__all__ = [
    "Proposals",
    "Proposer",
    "BaseProposer",
    "make_proposer",
    "PROPOSER_NAMES",
    "check_image",
    "breast_mask",
    "mask_box",
]
