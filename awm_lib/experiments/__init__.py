"""Studies built from many training runs (the paper's ablation: :mod:`awm_lib.experiments.ablation`).

The ablation is split by concept: ``ablation_study`` (configurations, scales, the
grid), ``ablation_aggregate`` (pooled metrics), ``ablation_records`` (the result
file), ``ablation_overlays`` (example figures) and ``ablation`` (running the
study; re-exports the public names of the others).
"""
