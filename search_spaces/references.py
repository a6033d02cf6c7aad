"""Reference networks as archs: baselines share the builder, latency path and exporter.

Where a reference is a point of a built-in space it is decoded from that space with every
decision fixed (as TuNAS builds MobileNetV2), so membership holds by construction; the
others are written in the arch grammar, transcribed from the released block lists
(tensorflow/tpu mnasnet_models.py and efficientnet_builder.py).
"""

from __future__ import annotations

import difflib
from typing import Callable

from .arch import Arch
from .builtin import EfficientNetEdgeTPUSpace, MnasNetSpace
from .scaling import round_repeats, scale


def _edgetpu(width: float, depth: float, resolution: int, dropout: float) -> Arch:
    space = EfficientNetEdgeTPUSpace(resolution=resolution, width=width, depth=depth, dropout=dropout)
    blocks = ("fused_mbconv",) * 3 + ("mbconv",) * 3
    kernels = (3, 3, 3, 5, 5, 5)
    expansions = (4, 8, 8, 8, 8, 8)
    choices = {}
    for i, sk in enumerate(space.skeleton, start=1):
        choices |= {f"s{i}.block": blocks[i - 1], f"s{i}.kernel": kernels[i - 1],
                    f"s{i}.expansion": expansions[i - 1], f"s{i}.filters": space.filters(sk.filters),
                    f"s{i}.repeats": round_repeats(sk.repeats, depth), f"s{i}.activation": "relu",
                    f"s{i}.se": 0}
    return space.decode(choices)


def _mobilenet_v2() -> Arch:
    space = MnasNetSpace()
    choices = {}
    for i, sk in enumerate(space.skeleton, start=1):
        choices |= {f"s{i}.op": "ds" if i == 1 else "mbconv_e6", f"s{i}.kernel": 3, f"s{i}.se": 0,
                    f"s{i}.skip": "identity", f"s{i}.filters": sk.filters, f"s{i}.layers": sk.repeats}
    return space.decode(choices)


_MNASNET_STEM, _MNASNET_HEAD = "v1-res224:stem-k3-s2-o32-relu", "head-o1280-relu-d0.2"

_STRINGS = {
    "mnasnet_a1": ",".join((
        "ds-r1-k3-s1-o16-relu-noskip", "mbconv-r2-k3-s2-e6-o24-relu", "mbconv-r3-k5-s2-e3-o40-se0.25-relu",
        "mbconv-r4-k3-s2-e6-o80-relu", "mbconv-r2-k3-s1-e6-o112-se0.25-relu",
        "mbconv-r3-k5-s2-e6-o160-se0.25-relu", "mbconv-r1-k3-s1-e6-o320-relu")),
    "mnasnet_b1": ",".join((
        "ds-r1-k3-s1-o16-relu-noskip", "mbconv-r3-k3-s2-e3-o24-relu", "mbconv-r3-k5-s2-e3-o40-relu",
        "mbconv-r3-k5-s2-e6-o80-relu", "mbconv-r2-k3-s1-e6-o96-relu", "mbconv-r4-k5-s2-e6-o192-relu",
        "mbconv-r1-k3-s1-e6-o320-relu-noskip")),
}

REFERENCES: dict[str, Callable[[], Arch]] = {
    "efficientnet_edgetpu_s": lambda: _edgetpu(1.0, 1.0, 224, 0.2),
    "efficientnet_edgetpu_m": lambda: _edgetpu(1.0, 1.1, 240, 0.2),
    "efficientnet_edgetpu_l": lambda: _edgetpu(1.2, 1.4, 300, 0.3),
    "mnasnet_a1": lambda: Arch.from_string(f"{_MNASNET_STEM}:{_STRINGS['mnasnet_a1']}:{_MNASNET_HEAD}"),
    "mnasnet_b1": lambda: Arch.from_string(f"{_MNASNET_STEM}:{_STRINGS['mnasnet_b1']}:{_MNASNET_HEAD}"),
    "mobilenet_v2": _mobilenet_v2,
    "efficientnet_b0": lambda: Arch.from_string(
        "v1-res224:stem-k3-s2-o32-swish:"
        "mbconv-r1-k3-s1-e1-o16-se0.25-swish,mbconv-r2-k3-s2-e6-o24-se0.25-swish,"
        "mbconv-r2-k5-s2-e6-o40-se0.25-swish,mbconv-r3-k3-s2-e6-o80-se0.25-swish,"
        "mbconv-r3-k5-s1-e6-o112-se0.25-swish,mbconv-r4-k5-s2-e6-o192-se0.25-swish,"
        "mbconv-r1-k3-s1-e6-o320-se0.25-swish:head-o1280-swish-d0.2"),
}

# Where each reference was published and what it is a member of (for `nas spaces references`).
NOTES = {
    "efficientnet_edgetpu_s": "member of efficientnet_edgetpu (width 1.0, depth 1.0, res 224)",
    "efficientnet_edgetpu_m": "member of efficientnet_edgetpu (width 1.0, depth 1.1, res 240)",
    "efficientnet_edgetpu_l": "member of efficientnet_edgetpu (width 1.2, depth 1.4, res 300, dropout 0.3)",
    "mnasnet_a1": "MnasNet-A1 (Tan et al. 2019); relu, SE in stages 3, 5, 6",
    "mnasnet_b1": "MnasNet-B1 (Tan et al. 2019); relu, no SE",
    "mobilenet_v2": "member of mnasnet (its skeleton; relu6)",
    "efficientnet_b0": "EfficientNet-B0 (Tan & Le 2019); swish, SE 0.25",
}


def reference_names() -> list[str]:
    return list(REFERENCES)


def reference(name: str, *, width: float = 1.0, depth: float = 1.0, resolution: int | None = None,
              num_classes: int | None = None) -> Arch:
    """A reference network as an :class:`Arch`, at its native size unless scaled.

    ``width``/``depth``/``resolution`` compound-scale it (:func:`search_spaces.scaling.scale`),
    e.g. to compare with searched models at proxy size.

    >>> reference("efficientnet_edgetpu_s").stages[0].to_string()
    'fused_mbconv-r1-k3-s1-e4-i24-o24-relu-noskip'
    >>> reference("mobilenet_v2", width=0.25, resolution=32).stem.filters
    8
    """
    if name not in REFERENCES:
        hint = difflib.get_close_matches(str(name), REFERENCES, n=1)
        raise ValueError(f"reference: unknown name {name!r}; allowed: {', '.join(REFERENCES)}"
                         + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    arch = REFERENCES[name]()
    if width != 1 or depth != 1 or resolution is not None:
        arch = scale(arch, width, depth, resolution)
    return arch.replace(num_classes=num_classes) if num_classes is not None else arch
