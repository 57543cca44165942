"""The thin core: the network, its likelihood and the Bayes-rule classifier, in plain eager PyTorch.

What the model is, and nothing about how to make it fast: no torch.compile, ctypes, matplotlib or
multiprocessing here (tests/test_layout.py checks). Faster forms of the same functions live in
`pcnn.fast`, data in `pcnn.datasets`, training in `pcnn.training`.
"""
