"""The notebook pipeline and its results: running the notebooks, their stages and the steps they share,
the results records they write, the ablation, the run records and their publishing into `figures/runs/`,
the Colab setup cell and the GPU smoke run.

It composes the other parts into runs and records them, and holds none of their logic: no model,
training step, metric or figure is defined here.
"""
