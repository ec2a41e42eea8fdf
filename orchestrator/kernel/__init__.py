"""The host side of a kernel: its source tree, series, config and build."""
