"""orchestrate: test Linux kernel patch series in virtual machines."""

__version__ = "0.1.0"
