"""Attend What Matters: RoI-token breast-cancer classification from mammograms.

A teaching re-implementation of Arora et al., "Attend what matters: Leveraging
vision foundational models for breast cancer classification using mammograms"
(ISBI 2026, arXiv 2604.19350).

Layers (a lower one never imports a higher one)::

    data -> proposals -> model -> losses -> train -> experiments -> book

The book layer (figures, widgets, results tables) lives in :mod:`awm_lib.book`;
the command line in :mod:`awm_lib.cli` sits beside it at the top.
"""

__version__ = "0.1.0"
