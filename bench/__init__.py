"""Benchmark of clconv's OpenCL kernels against PyTorch CPU; ``bench/run.py`` runs it."""
