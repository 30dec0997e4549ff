"""Learning rules: each turns (model, batch) into update directions (DESIGN.md §3)."""
from .backprop import Backprop
from .base import Rule, available_rules, get_rule, register

__all__ = ["Rule", "register", "get_rule", "available_rules", "Backprop"]
