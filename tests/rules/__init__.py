"""Tests of the learning rules (a package, so that ``rules.registry`` does not clash with the
layer registry ``tests/registry.py``)."""
