"""Training: the engine (`engine` is what callers import) and its parts, checkpoints, the EMA of the
weights, fine-tuning, torchrun data parallelism and device settings.

One job per module. It defines no model, loss or data set (`pcnn.core`, `pcnn.fast` and `pcnn.datasets`
do) and no command line (`pcnn.commands`).
"""
