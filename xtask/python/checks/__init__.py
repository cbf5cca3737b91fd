"""Checks: run by hand, or by the server tests against a running server
(see ../README.md)."""
