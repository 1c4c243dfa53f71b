"""OpenCL C sources of clconv's kernels, shipped as package data (see common.cl)."""
