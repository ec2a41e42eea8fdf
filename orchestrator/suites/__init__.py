"""Test suites: one module per kind of test and of its output (ktap is the generic one)."""
