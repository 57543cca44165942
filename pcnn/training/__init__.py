"""The training engine's parts, one job per module; `pcnn.train` is the entry that callers import."""
