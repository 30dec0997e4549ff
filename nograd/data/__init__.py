"""Datasets: synthetic sets generated from a seed (embedded real data arrives with the data issue)."""
from .synthetic import spirals, two_moons

__all__ = ["spirals", "two_moons"]
