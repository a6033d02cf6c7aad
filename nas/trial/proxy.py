"""One candidate at two scales: the deployment arch and the proxy arch trained for it.

The controller proposes members of the experiment's space: *deployment* archs, the networks
the user would ship (e.g. EfficientNet-EdgeTPU's space at 128 px, width 1.0). Their latency,
on/off-chip memory, reward and constraints are what the search ranks. Training one costs far
too much for a search, so each trial trains a *proxy*: the deployment arch compound-scaled
down by the experiment's ``proxy`` section (:func:`search_spaces.scaling.scale`: channels by
``width``, repeats by ``depth``, the input at ``resolution``), as MnasNet trained a cheap proxy
for accuracy and measured the full model on the device. Without a ``proxy`` section the
proxy is the deployment arch itself.

>>> from nas.config.experiment import ProxyConfig
>>> from search_spaces import reference
>>> s = reference("efficientnet_edgetpu_s", num_classes=10)
>>> p = proxy_arch(s, ProxyConfig(resolution=32, width=0.25, depth=0.5))
>>> (p.resolution, p.stem.filters, p.stages[3].repeats), (s.resolution, s.stem.filters, s.stages[3].repeats)
((32, 8, 3), (224, 32, 5))
"""

from __future__ import annotations

from search_spaces import Arch, SearchSpace, StagewiseSpace
from search_spaces.scaling import ScaledSpace, scale

from nas.config.experiment import ExperimentConfig, ProxyConfig

#: Archs of the space that :func:`check` scales before a search starts.
CHECKED_SAMPLES = 8


def divisor(cfg: ExperimentConfig) -> int:
    """The channel rounding of the experiment's space (its ``divisor`` argument, default 8)."""
    d = cfg.space.params.get("divisor", 8)
    return d if isinstance(d, int) and not isinstance(d, bool) and d > 0 else 8


def proxy_arch(arch: Arch, proxy: ProxyConfig, divisor: int = 8) -> Arch:
    """The arch a trial trains for the deployment ``arch`` (``arch`` itself without scaling)."""
    if proxy.identity:
        return arch
    return scale(arch, width=proxy.width, depth=proxy.depth, resolution=proxy.resolution, divisor=divisor)


def of(arch: Arch, cfg: ExperimentConfig) -> Arch:
    """:func:`proxy_arch` with the experiment's proxy section and channel rounding."""
    return proxy_arch(arch, cfg.proxy, divisor(cfg))


def space_of(space: SearchSpace, cfg: ExperimentConfig) -> SearchSpace:
    """The space of the proxies of ``space``'s members (same decisions; see
    :class:`search_spaces.scaling.ScaledSpace`), which a one-shot search's supernet holds."""
    if cfg.proxy.identity:
        return space
    if not isinstance(space, StagewiseSpace):
        raise ValueError(f"proxy: space {space.label} is not stagewise, so its proxies form no space a supernet "
                         "can hold; allowed: a StagewiseSpace, or no proxy section")
    return ScaledSpace(space, width=cfg.proxy.width, depth=cfg.proxy.depth, resolution=cfg.proxy.resolution,
                       divisor=divisor(cfg))


def check(space: SearchSpace, cfg: ExperimentConfig) -> None:
    """Before a search: the proxy is no larger than the deployment model, and the space's
    archs scale to valid archs. ``ValueError`` with one line naming ``proxy`` otherwise."""
    from search_spaces import count_macs

    if cfg.proxy.identity:
        return
    for i in range(CHECKED_SAMPLES):
        arch = space.sample(i)
        res = cfg.proxy.resolution
        if res is not None and res > arch.resolution:
            raise ValueError(f"proxy.resolution: {res} is larger than the deployment model's resolution "
                             f"{arch.resolution} (space {space.label}); allowed 8..{arch.resolution}")
        try:
            small = of(arch, cfg)
            # Any one head for both: only which of the two is bigger matters here.
            small_macs = count_macs(small, num_classes=10)
        except (ValueError, TypeError, AttributeError) as e:
            raise ValueError(f"proxy: the archs of space {space.label} cannot be scaled by (width {cfg.proxy.width:g}, "
                             f"depth {cfg.proxy.depth:g}, resolution {res or 'unchanged'}): "
                             f"{str(e).splitlines()[0]}") from None
        if small_macs > count_macs(arch, num_classes=10):
            raise ValueError(f"proxy: scaling the archs of space {space.label} by (width {cfg.proxy.width:g}, "
                             f"depth {cfg.proxy.depth:g}, resolution {res or 'unchanged'}) makes them larger "
                             "(more MACs), not cheaper; allowed: width, depth <= 1 and resolution <= the space's")


def describe(cfg: ExperimentConfig) -> str:
    """The deployment model's space and how its candidates are trained, in words."""
    sp, px = cfg.space, cfg.proxy
    deploy = (f"`{sp.name}` at {sp.resolution or 'its default'} px, width {sp.width or 1}, depth {sp.depth or 1}"
              f"{f', {sp.num_classes} classes' if sp.num_classes else ''}")
    if px.identity:
        return f"deployment model {deploy}, trained as itself (no proxy section)"
    return (f"deployment model {deploy}; trained as a proxy at {px.resolution or 'the same'} px, width x{px.width:g}, "
            f"depth x{px.depth:g} of it")
