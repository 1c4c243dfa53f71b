"""clconv: OpenCL convolutions behind a REST API.

The core (``clconv.core`` for request validation and planning, ``clconv.runtime`` for OpenCL
devices, programs and launches) does not import FastAPI; ``clconv.api`` is the HTTP adapter.
"""

__version__ = "0.1.0"
