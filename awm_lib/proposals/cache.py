"""Proposals cached on disk, one file per image and per proposer settings.

Running a detector over thousands of mammograms is the slowest step of the
pipeline and its result never changes for fixed settings, so we keep it:
``<root>/<proposer>-<hash>/<image_key>_preds.txt`` in the reference format,
where ``hash`` is a short SHA-1 of the proposer's settings (change a setting,
get a new folder: a stale cache can never be read by mistake). The settings
themselves are saved beside the files as ``settings.json``. Files are written
atomically, so an interrupted run leaves no half-written file behind.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

from awm_lib import paths
from awm_lib.io_utils import write_json_atomic
from awm_lib.proposals.base import Proposals
from awm_lib.proposals.predsfile import SUFFIX, read_preds, write_preds


def settings_hash(settings: dict) -> str:
    """A 12-hex-digit fingerprint of a settings dict (key order does not matter)."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:12]


class ProposalCache:
    """``cache.get_or_compute(image_key, fn)`` returns cached proposals or stores ``fn()``."""

    def __init__(self, settings: dict, root: str | Path | None = None):
        self.settings = dict(settings)
        name = str(self.settings.get("proposer", "proposals"))
        base = Path(root) if root is not None else paths.cache_root() / "proposals"
        self.dir = base / f"{name}-{settings_hash(self.settings)}"

    def path(self, image_key: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", str(image_key))
        return self.dir / f"{safe}{SUFFIX}"

    def get(self, image_key: str) -> Proposals | None:
        p = self.path(image_key)
        return read_preds(p) if p.is_file() else None

    def put(self, image_key: str, proposals: Proposals) -> None:
        if not (self.dir / "settings.json").is_file():
            write_json_atomic(self.dir / "settings.json", self.settings)
        write_preds(self.path(image_key), proposals)

    def get_or_compute(self, image_key: str, compute: Callable[[], Proposals]) -> Proposals:
        hit = self.get(image_key)
        if hit is not None:
            return hit
        props = compute()
        self.put(image_key, props)
        return props
