"""Guantong (贯通): industrial data collection with verifiable connectivity evidence.

This package is the composition root: the ``guantong`` command and anything that wires the
other packages together. Nothing else may import it.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
