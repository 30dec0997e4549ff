"""Learning rules: each turns (model, batch) into update directions (DESIGN.md §3)."""
from .backprop import Backprop
from .base import Rule, available_rules, get_rule, register
from .feedback import BRSF, DFA, FA, FRSF, USF, OpticalDFA
from .pepita import AFA, PEPITA
from .alignment import AlignmentLogger, feedback_angles, update_angles
from .forward_gradient import ForwardGradient, ForwardGradientLocal
from .zeroth_order import SPSA, MeZO
from .forward_forward import ForwardForward
from .mono_forward import MonoForward
from .foton import FOTON

__all__ = ["Rule", "register", "get_rule", "available_rules", "Backprop",
           "FA", "USF", "FRSF", "BRSF", "DFA", "OpticalDFA", "PEPITA", "AFA",
           "update_angles", "feedback_angles", "AlignmentLogger",
           "ForwardGradient", "ForwardGradientLocal", "SPSA", "MeZO",
           "ForwardForward", "MonoForward", "FOTON"]
