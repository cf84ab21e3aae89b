"""Compiled kernels and fixed-memory structures (private; use ``edgekm``)."""
