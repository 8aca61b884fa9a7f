"""The book layer: figures, widgets and results tables that the chapters call.

The top layer of the library: nothing below it imports ``awm_lib.book``
(``tests/test_layers.py`` keeps that true); only the chapters, the CLI and
the tests do.

- :mod:`~awm_lib.book.viz`              -- shared plotting helpers (palette, axes, image panels, curves)
- :mod:`~awm_lib.book.data_figures`     -- chapter 1: mammograms, DICOM, breast crop, real vs synthetic
- :mod:`~awm_lib.book.proposal_figures` -- chapter 3: proposers, recall, FROC, the paper's VinDr boxes
- :mod:`~awm_lib.book.model_figures`    -- chapters 4 and 5: RoI attention and embeddings of a trained model
- :mod:`~awm_lib.book.pretrain_figures` -- chapter 6: PCA of patch features, CLS attention maps
- :mod:`~awm_lib.book.widgets`          -- chapter 7: the interactive ablation panel
- :mod:`~awm_lib.book.results`          -- chapters 7 and 8: the ablation results file as tables, figures,
claims
"""
