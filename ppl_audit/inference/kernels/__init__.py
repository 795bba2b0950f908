"""Sampling kernels: pure ``init``/``step`` functions over a batch of chains."""
