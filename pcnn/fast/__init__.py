"""Faster training forms of the core's functions: the restructured forward, the convolution gradient,
the native CPU kernel (csrc/), helper processes over a CPU's cores and the choice of arithmetic.

Each computes what `pcnn.core` computes, and its equivalence test says so (tests/test_fastpath.py,
test_convgrad.py, test_native.py, test_core_parallel.py, test_precision.py). Nothing here defines the
model or the loss, and `pcnn.core` never imports from here.
"""
