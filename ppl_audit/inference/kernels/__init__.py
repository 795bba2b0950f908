"""Sampling kernels: pure ``init``/``step`` functions over a batch of chains."""


__all__ = []  # the kernels are imported by module name: ppl_audit.inference.kernels.mh
