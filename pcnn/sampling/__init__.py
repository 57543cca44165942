"""Drawing images from the model: the naive and the exact cached sampler, the self-guided sampler
(the model's own classifier as guide), and sample grids.

Only sampling: no scoring of samples (that is `pcnn.evaluation`) and no command line (`pcnn.commands`).
"""
