"""tinygrad_conv: a small autograd framework with Cython convolution kernels."""

from tinygrad_conv import _threads

__all__ = ["_threads"]
