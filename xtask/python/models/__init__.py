"""Generators of the random-weight test and benchmark models (see ../README.md)."""
