"""The arch grammar: golden strings, strict errors, and property tests of the round trip."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import search_spaces as s
from search_spaces import ACTIVATIONS, Arch, Block, Head, Stem

# Golden strings: changing the grammar or a reference must show up here.
GOLDEN = {
    "efficientnet_edgetpu_s": (
        "v1-res224:stem-k3-s2-o32-relu:fused_mbconv-r1-k3-s1-e4-i24-o24-relu-noskip,"
        "fused_mbconv-r2-k3-s2-e8-o32-relu,fused_mbconv-r4-k3-s2-e8-o48-relu,mbconv-r5-k5-s2-e8-o96-relu,"
        "mbconv-r4-k5-s1-e8-o144-relu,mbconv-r2-k5-s2-e8-o192-relu:head-o1280-relu-d0.2"),
    "efficientnet_edgetpu_l": (
        "v1-res300:stem-k3-s2-o40-relu:fused_mbconv-r2-k3-s1-e4-i32-o32-relu-noskip,"
        "fused_mbconv-r3-k3-s2-e8-o40-relu,fused_mbconv-r6-k3-s2-e8-o56-relu,mbconv-r7-k5-s2-e8-o112-relu,"
        "mbconv-r6-k5-s1-e8-o176-relu,mbconv-r3-k5-s2-e8-o232-relu:head-o1536-relu-d0.3"),
    "mobilenet_v2": (
        "v1-res224:stem-k3-s2-o32-relu6:ds-r1-k3-s1-o16-relu6,mbconv-r2-k3-s2-e6-o24-relu6,"
        "mbconv-r3-k3-s2-e6-o32-relu6,mbconv-r4-k3-s2-e6-o64-relu6,mbconv-r3-k3-s1-e6-o96-relu6,"
        "mbconv-r3-k3-s2-e6-o160-relu6,mbconv-r1-k3-s1-e6-o320-relu6:head-o1280-relu6-d0.2"),
    "mnasnet_a1": (
        "v1-res224:stem-k3-s2-o32-relu:ds-r1-k3-s1-o16-relu-noskip,mbconv-r2-k3-s2-e6-o24-relu,"
        "mbconv-r3-k5-s2-e3-o40-se0.25-relu,mbconv-r4-k3-s2-e6-o80-relu,mbconv-r2-k3-s1-e6-o112-se0.25-relu,"
        "mbconv-r3-k5-s2-e6-o160-se0.25-relu,mbconv-r1-k3-s1-e6-o320-relu:head-o1280-relu-d0.2"),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_reference_golden_strings(name):
    arch = s.reference(name)
    assert arch.to_string() == GOLDEN[name]
    assert Arch.from_string(GOLDEN[name]) == arch


def test_docstring_example_and_str():
    a = Arch(stem=Stem(16), stages=(Block("mbconv", 24, expansion=4, stride=2),), head=Head(320), resolution=32)
    assert str(a) == "v1-res32:stem-k3-s2-o16-relu:mbconv-r1-k3-s2-e4-o24-relu:head-o320-relu"
    assert hash(Arch.from_string(str(a))) == hash(a)


def test_arch_is_immutable_and_numbers_canonical():
    a = Arch(stages=[Block("fused_mbconv", 8, expansion=4.0, se_ratio=0.25)], resolution=32, num_classes=10)
    with pytest.raises(AttributeError):
        a.resolution = 64  # type: ignore[misc]
    assert isinstance(a.stages, tuple)
    assert a.stages[0].expansion == 4 and isinstance(a.stages[0].expansion, int)
    assert a.to_string().startswith("v1-res32-cls10:")
    b = Block("mbconv", 8, expansion=2.5)
    assert "e2.5" in b.to_string()


BAD_STRINGS = [
    ("", "expected 4 sections"),
    ("v2-res32:stem-k3-s2-o8-relu:conv-r1-k3-s1-o8-relu:head-o8-relu", "unknown grammar version 'v2'"),
    ("v1:stem-k3-s2-o8-relu:conv-r1-k3-s1-o8-relu:head-o8-relu", "missing token 'res'"),
    ("v1-res32-res64:stem-k3-s2-o8-relu:conv-r1-k3-s1-o8-relu:head-o8-relu", "duplicate token 'res64'"),
    ("v1-res32:stem-k3-s2-o8:conv-r1-k3-s1-o8-relu:head-o8-relu", "missing activation"),
    ("v1-res32:stem-k3-s2-o8-relu:conv-r1-k3-s1-o8-relu-swish:head-o8-relu", "duplicate token 'swish'"),
    ("v1-res32:stem-k3-s2-o8-relu:conv-r1-k3-s1-o8-gelu:head-o8-relu", "unknown token 'gelu'.*hard_swish"),
    ("v1-res32:stem-k3-s2-o8-relu:conv-r1-k3-s1-e4-o8-relu:head-o8-relu", "unknown token 'e4'"),
    ("v1-res32:stem-k3-s2-o8-relu:mbconv-r1-k3-s1-o8-relu:head-o8-relu", "missing token 'e'"),
    ("v1-res32:stem-k3-s2-o8-relu:mbconv-r1-k4-s1-e2-o8-relu:head-o8-relu", "kernel 4 is even"),
    ("v1-res32:stem-k3-s2-o8-relu:mbconv-r1-k3-s3-e2-o8-relu:head-o8-relu", r"stride \(s\): 3 is out of range"),
    ("v1-res32:stem-k3-s2-o8-relu:mbconv-r1-k3-s1-e2-o8-relu-noskip-noskip:head-o8-relu", "duplicate token 'noskip'"),
    ("v1-res32:stem-k3-s2-o8-relu:mbconv-r1-r2-k3-s1-e2-o8-relu:head-o8-relu", "duplicate token 'r2'"),
    ("v1-res32:stem-k3-s2-o8-relu:mbconv-r1-k3-s1-e2-o8-se0-relu:head-o8-relu", "leave the token out"),
    ("v1-res32:stem-k3-s2-o8-relu:mbconv-r1-k3-s1-e2-o8-se1.5-relu:head-o8-relu", r"SE ratio \(se\): 1.5 is out"),
    ("v1-res32:stem-k3-s2-o8-relu:mbconv-r1-k3-s1-e2.50-o8-relu:head-o8-relu", "write the number as e2.5"),
    ("v1-res32:stem-k3-s2-o8-relu:mbconv-r01-k3-s1-e2-o8-relu:head-o8-relu", "plain integer"),
    ("v1-res32:stem-k3-s2-o8-relu:bottleneck-r1-k3-s1-o8-relu:head-o8-relu", "unknown block type 'bottleneck'"),
    ("v1-res32:stem-k3-s2-o8-relu::head-o8-relu", "unknown block type ''"),
    ("v1-res4:stem-k3-s2-o8-relu:conv-r1-k3-s1-o8-relu:head-o8-relu", r"resolution \(res\): 4 is out of range"),
    ("v1-res32:stem-k3-s2-o8-relu:conv-r1-k3-s1-o8-relu:head-o8-relu-d1.5", r"dropout \(d\): 1.5 is out"),
    ("v1-res32:stem-k3-s2-o8-relu:conv-r1-k3-s1-o8-relu:tail-o8-relu", "must start with 'head'"),
    ("v1-res32:conv-r1-k3-s1-o8-relu:conv-r1-k3-s1-o8-relu:head-o8-relu", "must start with 'stem'"),
    ("v1-res32:stem-k3-s2-o8-relu:ds-r1-k3-s1-i8-o8-relu:head-o8-relu", "unknown token 'i8'"),
    ("v1-res32:stem-k3-s2-o8-relu:conv-r0-k3-s1-o8-relu:head-o8-relu", r"repeats \(r\): 0 is out of range"),
]


@pytest.mark.parametrize("text,match", BAD_STRINGS)
def test_strict_parse_errors_name_the_token(text, match):
    with pytest.raises(ValueError, match=match):
        Arch.from_string(text)


def test_constructor_validation():
    with pytest.raises(ValueError, match=r"conv expansion \(e\): conv blocks have no expansion"):
        Block("conv", 8, expansion=4)
    with pytest.raises(ValueError, match="block type: unknown value 'resnet'"):
        Block("resnet", 8)
    with pytest.raises(ValueError, match="arch stages: expected a non-empty sequence"):
        Arch(stages=())
    with pytest.raises(ValueError, match="activation: unknown value 'gelu'"):
        Stem(activation="gelu")
    with pytest.raises(ValueError, match="expected an integer"):
        Block("conv", 8.0)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- properties

numbers = st.one_of(st.integers(1, 12), st.floats(0.1, 12, allow_nan=False).map(lambda x: round(x, 3)))
blocks = st.builds(
    Block,
    type=st.sampled_from(s.BLOCK_TYPES),
    filters=st.integers(1, 2048),
    kernel=st.sampled_from((1, 3, 5, 7)),
    stride=st.integers(1, 2),
    repeats=st.integers(1, 8),
    se_ratio=st.one_of(st.just(0), st.floats(0.01, 1.0).map(lambda x: round(x, 4))),
    activation=st.sampled_from(ACTIVATIONS),
    skip=st.booleans(),
).flatmap(lambda b: st.just(b) if b.type not in ("mbconv", "fused_mbconv") else st.builds(
    lambda e, i: b.__class__(**{**b.__dict__, "expansion": e, "expand_from": i}),
    numbers, st.one_of(st.none(), st.integers(1, 512))))
archs = st.builds(
    Arch,
    stages=st.lists(blocks, min_size=1, max_size=8).map(tuple),
    stem=st.builds(Stem, filters=st.integers(1, 256), kernel=st.sampled_from((1, 3, 5)),
                   stride=st.integers(1, 2), activation=st.sampled_from(ACTIVATIONS)),
    head=st.builds(Head, filters=st.integers(0, 2048), activation=st.sampled_from(ACTIVATIONS),
                   dropout=st.one_of(st.just(0), st.floats(0.0, 0.9).map(lambda x: round(x, 3)))),
    resolution=st.integers(8, 1024),
    num_classes=st.one_of(st.none(), st.integers(1, 5000)),
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(archs)
def test_round_trip_on_random_archs(arch):
    text = arch.to_string()
    again = Arch.from_string(text)
    assert again == arch
    assert again.to_string() == text


ALPHABET = "v1resclstmkoduaxhfbnpiwz0123456789.-:,_ "


@settings(max_examples=3000, deadline=None)
@given(st.one_of(
    st.text(alphabet=ALPHABET, max_size=120),
    # Mutations of a valid string hit the deep parser paths, not just the section split.
    st.tuples(st.integers(0, len(GOLDEN["mnasnet_a1"])), st.integers(0, 6), st.text(ALPHABET, max_size=6)).map(
        lambda t: GOLDEN["mnasnet_a1"][:t[0]] + t[2] + GOLDEN["mnasnet_a1"][t[0] + t[1]:]),
))
def test_fuzzed_strings_raise_only_value_error_with_a_message(text):
    try:
        arch = Arch.from_string(text)
    except ValueError as e:
        assert str(e) and "\n" not in str(e)
    else:  # whatever parses must print back to itself
        assert Arch.from_string(arch.to_string()) == arch
