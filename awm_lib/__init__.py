"""Attend What Matters: RoI-token breast-cancer classification from mammograms.

A teaching re-implementation of Arora et al., "Attend what matters: Leveraging
vision foundational models for breast cancer classification using mammograms"
(ISBI 2026, arXiv 2604.19350).

Layers (a lower one never imports a higher one)::

    data -> proposals -> model -> features -> losses -> train -> experiments -> book -> cli

In full, lowest first (``tests/test_layers.py`` keeps this true; packages that
share a layer do not import each other):

==========================  ================================================================
foundation                  ``errors``, ``paths``, ``io_utils``, ``config`` (typed
                            ``--set`` overrides), ``device`` (the device choice), ``optim``
                            (AdamW groups, the learning-rate schedule): used by every
                            layer, import no layer
``data``                    images, datasets, synthetic mammograms
``proposals``               RoI proposers, boxes, recall
``model``                   backbone, RoI transformer, ``model.cost`` (token / FLOP accounting)
``features``                RoI tokens of a frozen backbone, cached
``losses``                  BCE, repulsive, contrastive
``train``, ``pretrain``     supervised training; self-supervised pretraining of the backbone
``experiments``, ``bench``  the ablation study; the throughput benchmark
``book``                    figures, widgets, results tables the chapters call
``cli``                     one module per ``python -m awm_lib`` command (``__main__`` runs it)
==========================  ================================================================
"""

__version__ = "0.1.0"
