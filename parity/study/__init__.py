"""The many-seed study: does the JAX port train to the same accuracy as the PyTorch reference?

`python -m parity.compare` (parity.study.compare) runs both frameworks in pairs of seeds until
the group-sequential plan (plan, stats) decides, keeping every finished run in its folder (store)
and rebuilding the report from it (summary, report, plots; per-example parity in examples).
"""
