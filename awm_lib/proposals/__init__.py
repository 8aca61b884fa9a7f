"""Proposals: where should the model look? (the method's first step)

- :mod:`~awm_lib.proposals.boxes` -- box formats, IoU, NMS, squares (the only cxcywh<->xyxy converter)
- :mod:`~awm_lib.proposals.base` -- :class:`Proposals`, the proposer interface, :func:`make_proposer`
- :mod:`~awm_lib.proposals.select` -- anchor + NMS + top-k + squares + padding, shared by all proposers
- :mod:`~awm_lib.proposals.blob` -- the training-free default (DoG masses, speck clusters)
- :mod:`~awm_lib.proposals.gdino` -- Grounding DINO through transformers (+ a tiny offline test model)
- :mod:`~awm_lib.proposals.simple` -- oracle, random and no proposals, for ablations
- :mod:`~awm_lib.proposals.predsfile`, :mod:`~awm_lib.proposals.cache` -- the reference files, the disk cache
- :mod:`~awm_lib.proposals.recall` -- lesion recall@k and FROC
- :mod:`~awm_lib.proposals.gdino_vindr` -- what the paper's detector really proposed
"""

from awm_lib.proposals.base import PROPOSER_NAMES, Proposals, make_proposer
from awm_lib.proposals.select import SelectConfig, Selection, select_rois

__all__ = ["PROPOSER_NAMES", "Proposals", "make_proposer", "SelectConfig", "Selection", "select_rois"]
