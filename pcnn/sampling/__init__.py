"""Drawing images from the model: the naive and the exact cached sampler, and sample grids.

Only sampling: no scoring of samples (that is `pcnn.evaluation`) and no command line (`pcnn.commands`).
"""
