"""Studies built from many training runs (the paper's ablation: :mod:`awm_lib.experiments.ablation`)."""
