"""Learning rules: each turns (model, batch) into update directions (DESIGN.md §3)."""
from .backprop import Backprop
from .base import Rule, available_rules, get_rule, register
from .feedback import BRSF, DFA, FA, FRSF, USF
from .optical_dfa import OpticalDFA
from .pepita import AFA, PEPITA
from .forward_gradient import ForwardGradient, ForwardGradientLocal
from .zeroth_order import SPSA, MeZO
from .forward_forward import ForwardForward
from .mono_forward import MonoForward
from .foton import FOTON
from .vcas import VCAS
from .dsf import DSF, TruncatedBPTT
from .pipelined import PipelinedBackprop

__all__ = ["Rule", "register", "get_rule", "available_rules", "Backprop",
           "FA", "USF", "FRSF", "BRSF", "DFA", "OpticalDFA", "PEPITA", "AFA",
           "ForwardGradient", "ForwardGradientLocal", "SPSA", "MeZO",
           "ForwardForward", "MonoForward", "FOTON", "VCAS", "PipelinedBackprop", "DSF", "TruncatedBPTT"]


def __getattr__(name):
    # the alignment measures moved to nograd.callbacks.alignment (a fit callback, not a rule);
    # loaded on first use so that importing the rules does not import train
    if name in ("AlignmentLogger", "update_angles", "feedback_angles"):
        from ..callbacks import alignment

        return getattr(alignment, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
