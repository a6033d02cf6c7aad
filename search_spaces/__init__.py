"""Search spaces, architectures and the Keras builder.

Public API::

    import search_spaces as s
    space = s.get("efficientnet_edgetpu", resolution=32, width=0.25, depth=0.5)
    arch = space.sample(0)                      # an immutable Arch
    text = arch.to_string()                     # the compact, versioned arch string
    assert s.Arch.from_string(text) == arch
    model = s.build_model(arch, num_classes=10) # a plain keras.Model
    ref = s.reference("efficientnet_edgetpu_s")

This package imports Keras only when a model is built, and never imports Ray, controllers
or latency code.
"""

from .arch import ACTIVATIONS, BLOCK_TYPES, GRAMMAR_VERSION, Arch, Block, Head, Stem, parse_arch
from .builder import build_model
from .builtin import EfficientNetEdgeTPUSpace, MnasNetSpace
from .categorical import CategoricalSpace, Point
from .held import HeldSpace, hold
from .plan import Layer, count_macs, count_params, plan
from .references import reference, reference_names
from .scaling import round_filters, round_repeats
from .space import Decision, SearchSpace, SpaceTooLarge, StagewiseSpace, get, names, register, registered

__all__ = [
    "ACTIVATIONS", "BLOCK_TYPES", "GRAMMAR_VERSION", "Arch", "Block", "CategoricalSpace", "Decision",
    "EfficientNetEdgeTPUSpace", "Head", "HeldSpace", "Layer", "MnasNetSpace", "Point", "SearchSpace", "SpaceTooLarge",
    "StagewiseSpace", "Stem", "build_model", "count_macs",
    "count_params", "get", "hold", "names", "parse_arch", "plan", "reference", "reference_names", "register",
    "registered", "round_filters", "round_repeats", "Supernet",
]


def __getattr__(name: str):
    # The weight-sharing supernet loads Keras: only when asked for.
    if name == "Supernet":
        from .supernet import Supernet

        return Supernet
    raise AttributeError(f"module 'search_spaces' has no attribute {name!r}")
