"""One contract suite over every registered space (and a user space by import path)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import search_spaces as s
from search_spaces import Arch, Decision, SearchSpace
from search_spaces.space import SPACES as REGISTRY

from conftest import PROXY_KWARGS

SPACES = s.names() + ["my_spaces:TinySpace"]


def proxy(name: str) -> SearchSpace:
    assert name in PROXY_KWARGS, f"space {name!r} has no proxy arguments in tests/conftest.py PROXY_KWARGS"
    return s.get(name, **PROXY_KWARGS[name])


@pytest.fixture(params=SPACES)
def space(request) -> SearchSpace:
    return proxy(request.param)


def test_decisions_and_size(space):
    ds = space.decision_list
    assert ds and all(isinstance(d, Decision) for d in ds)
    assert len({d.name for d in ds}) == len(ds)
    assert space.size == math.prod(len(d.choices) for d in ds) > 1
    assert space.label in space.describe()


def test_sampling_is_seeded(space):
    a = [space.sample(np.random.default_rng(7)) for _ in range(2)]
    assert a[0] == a[1]
    assert len({space.sample(seed) for seed in range(20)}) > 1


def test_encode_decode_contains_and_strings(space):
    rng = np.random.default_rng(0)
    for _ in range(50):
        choices = space.sample_choices(rng)
        arch = space.decode(choices)
        assert space.encode(arch) == choices
        assert space.contains(arch)
        assert Arch.from_string(arch.to_string()) == arch
        assert space.decode_indices(space.indices(choices)) == arch


def test_contains_rejects_other_spaces(space):
    # The benchmark space is a sub-space of efficientnet_edgetpu by design.
    nested = {("efficientnet_edgetpu", "efficientnet_edgetpu_bench")}
    others = [proxy(n) for n in SPACES
              if proxy(n).label != space.label and (space.name, n) not in nested]
    for other in others:
        assert not space.contains(other.sample(0))
    bigger = space.sample(0).replace(resolution=space.sample(0).resolution + 8)
    assert not space.contains(bigger)


def test_decode_validation_messages(space):
    good = space.sample_choices(0)
    first = space.decision_list[0]
    with pytest.raises(ValueError, match=f"missing decision '{first.name}'"):
        space.decode({k: v for k, v in good.items() if k != first.name})
    with pytest.raises(ValueError, match="unknown decision 'nonsense'"):
        space.decode({**good, "nonsense": 1})
    with pytest.raises(ValueError, match=f"decision '{first.name}': 'bogus' is not a choice; allowed"):
        space.decode({**good, first.name: "bogus"})


@pytest.mark.parametrize("name", SPACES)
def test_random_archs_build_run_and_match_the_plan(name):
    space = proxy(name)
    for seed in range(2):
        arch = space.sample(seed)
        model = space.build(arch)
        plan = s.plan(arch)
        assert [ly.name for ly in model.layers] == [ly.name for ly in plan]
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        assert trainable == s.count_params(arch)
        x = np.random.default_rng(0).random((2, *model.inputs[0].shape[1:]), dtype=np.float32)
        y = model.predict(x, verbose=0)
        classes = arch.num_classes or 1000
        assert y.shape == (2, classes)
        np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-4)
        # Deterministic names: the same arch builds the same layer names again.
        assert [ly.name for ly in space.build(arch).layers] == [ly.name for ly in model.layers]


@pytest.mark.slow
@pytest.mark.parametrize("name", SPACES)
def test_random_arch_converts_to_int8_tflite_and_runs(name):
    from latency_models.convert import to_int8_tflite
    from latency_models.isolated import invoke_isolated

    space = proxy(name)
    arch = space.sample(3)
    blob = to_int8_tflite(space.build(arch))
    # The interpreter runs in a child process: LiteRT beside TF's converter can abort (isolated.py).
    out, info = invoke_isolated(blob, np.zeros((1, arch.resolution, arch.resolution, 3), np.int8))
    assert info["input"]["dtype"] == info["output"]["dtype"] == "int8"
    assert out.shape == (1, arch.num_classes or 1000)


# ---------------------------------------------------------------------------------- registry


def test_registry_is_strict():
    class Clash(SearchSpace):
        name = "mnasnet"

    with pytest.raises(ValueError, match="space name 'mnasnet' is already registered"):
        s.register(Clash)
    with pytest.raises(ValueError, match="unknown name 'mnasnt'.*allowed: efficientnet_edgetpu, efficientnet_edgetpu_bench, mnasnet.*did you mean 'mnasnet'"):
        s.get("mnasnt")
    with pytest.raises(ValueError, match="expected a SearchSpace subclass"):
        s.register(int)  # type: ignore[arg-type]
    assert set(REGISTRY.names()) >= {"mnasnet", "efficientnet_edgetpu"}


@pytest.mark.parametrize("path,match", [
    ("no_such_module:Space", "cannot import it"),
    ("my_spaces:Nope", "module 'my_spaces' has no 'Nope'; SearchSpace classes there: TinySpace"),
    ("search_spaces.arch:Arch", "is not a SearchSpace subclass"),
    ("my_spaces:", "must look like 'module:Class'"),
])
def test_import_path_errors(path, match):
    with pytest.raises(ValueError, match=match):
        s.get(path)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="width: expected a number in"):
        s.get("mnasnet", width=-1)
    with pytest.raises(ValueError, match="bad arguments.*unexpected keyword argument 'colour'"):
        s.get("mnasnet", colour="red")
    with pytest.raises(ValueError, match="resolution: expected an integer"):
        s.get("efficientnet_edgetpu", resolution="big")


def test_user_space_is_usable_like_a_builtin():
    space = s.get("my_spaces:TinySpace")
    assert space.size == 2 * 2 * 3 * 2 * 2
    arch = space.sample(1)
    assert space.encode(arch) == space.encode(Arch.from_string(arch.to_string()))
    assert s.count_params(arch) > 0


def test_readme_shows_the_user_space_verbatim():
    from conftest import EXAMPLES, ROOT

    code = (EXAMPLES / "my_spaces.py").read_text()
    body = code.split('"""', 2)[2].strip()  # everything after the module docstring
    assert body in (ROOT / "README.md").read_text()
    assert len(body.splitlines()) <= 40


# -------------------------------------------------------------------------------- references

EXACT = {
    "efficientnet_edgetpu_s": 5_438_392,
    "efficientnet_edgetpu_m": 6_899_496,
    "efficientnet_edgetpu_l": 10_589_712,
    "mobilenet_v2": 3_504_872,
    "efficientnet_b0": 5_288_548,
}
APPROX = {"mnasnet_a1": 3.89e6, "mnasnet_b1": 4.38e6}


@pytest.mark.parametrize("name", sorted(EXACT) + sorted(APPROX))
def test_reference_parameter_counts(name):
    arch = s.reference(name)
    model = s.build_model(arch, num_classes=1000)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == s.count_params(arch, num_classes=1000)
    if name in EXACT:
        assert trainable == EXACT[name]
    else:
        assert abs(trainable - APPROX[name]) / APPROX[name] < 0.005


@pytest.mark.parametrize("name,space,kwargs", [
    ("efficientnet_edgetpu_s", "efficientnet_edgetpu", {}),
    ("efficientnet_edgetpu_m", "efficientnet_edgetpu", {"depth": 1.1, "resolution": 240}),
    ("efficientnet_edgetpu_l", "efficientnet_edgetpu", {"width": 1.2, "depth": 1.4, "resolution": 300,
                                                         "dropout": 0.3}),
    ("mobilenet_v2", "mnasnet", {}),
])
def test_references_are_members_of_their_space(name, space, kwargs):
    assert s.get(space, **kwargs).contains(s.reference(name))
    assert not s.get(space).contains(s.reference("efficientnet_b0"))


def test_reference_macs_match_the_papers():
    # MobileNetV2 300M, MnasNet-A1 312M, EfficientNet-B0 390M mult-adds (as published).
    assert abs(s.count_macs(s.reference("mobilenet_v2")) / 1e6 - 300) < 3
    assert abs(s.count_macs(s.reference("mnasnet_a1")) / 1e6 - 312) < 3
    assert abs(s.count_macs(s.reference("efficientnet_b0")) / 1e6 - 390) < 6


def test_unknown_reference_lists_names():
    with pytest.raises(ValueError, match="unknown name 'mobilenet_v3'.*allowed: efficientnet_edgetpu_s.*did you mean 'mobilenet_v2'"):
        s.reference("mobilenet_v3")


def test_compound_scaling_reproduces_the_published_family():
    from search_spaces.scaling import scale

    L = scale(s.reference("efficientnet_edgetpu_s"), 1.2, 1.4, 300)
    assert L.replace(head=s.reference("efficientnet_edgetpu_l").head) == s.reference("efficientnet_edgetpu_l")
    proxy = s.reference("efficientnet_edgetpu_s", width=0.25, depth=0.5, resolution=32)
    assert s.get("efficientnet_edgetpu", width=0.25, depth=0.5, resolution=32).contains(proxy)
    mb2 = s.reference("mobilenet_v2", width=0.5, depth=0.5, resolution=64)
    assert s.get("mnasnet", width=0.5, depth=0.5, resolution=64).contains(mb2)
    assert s.reference("mnasnet_a1", width=0.5).stem.filters == 16
    with pytest.raises(ValueError, match="width: expected a number in"):
        scale(proxy, width=0)
