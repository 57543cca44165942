"""Judging a model: Bayes classification of a split, metrics, the baseline CNN, analyses, partial
images, how samples show their class and the sweep of sampling levers, the course's harness and
FID/KID (`fid/`).

It reads models and samples; it does not train the generative model, run notebooks or write the report.
"""
