"""space.hold: a stagewise space with some decisions held at one value (search_spaces.held)."""

from __future__ import annotations

import pytest

import search_spaces as s
from search_spaces.held import HeldSpace
from search_spaces.supernet_shapes import FUSED, FUSED_E1, stage_shapes


@pytest.fixture(scope="module")
def base():
    return s.get("efficientnet_edgetpu", resolution=128, num_classes=10)


@pytest.fixture(scope="module")
def ref():
    return s.reference("efficientnet_edgetpu_s", resolution=128, num_classes=10)


def test_held_decisions_leave_the_space_and_every_member_has_the_arch_s_values(base, ref):
    space = s.hold(base, ["block"], from_arch=ref)
    names = [d.name for d in space.decision_list]
    assert not any(n.endswith(".block") for n in names)
    assert len(names) == len(base.decision_list) - base.num_stages()
    assert space.size * 2 ** base.num_stages() == base.size
    for seed in range(20):
        arch = space.sample(seed)
        assert base.contains(arch)
        assert [b.type for b in arch.stages] == [b.type for b in ref.stages]
        # the same arch string in both spaces; the held space encodes it without the held keys
        assert s.Arch.from_string(arch.to_string()) == arch
        assert space.decode(space.encode(arch)) == arch
        assert {k: v for k, v in base.encode(arch).items() if not k.endswith(".block")} == space.encode(arch)


def test_values_hold_one_stage_or_every_stage_and_override_the_arch(base, ref):
    space = s.hold(base, ["block"], values={"s6.block": "fused_mbconv", "se": 0}, from_arch=ref)
    arch = space.sample(3)
    assert arch.stages[5].type == "fused_mbconv" and arch.stages[0].type == "fused_mbconv"
    assert all(b.se_ratio == 0 for b in arch.stages)
    assert space.held["s6.block"] == "fused_mbconv"


def test_an_arch_outside_the_held_values_is_not_a_member(base, ref):
    space = s.hold(base, ["block"], from_arch=ref)
    other = base.decode({**base.encode(ref), "s1.block": "mbconv"})
    assert base.contains(other) and not space.contains(other)
    with pytest.raises(ValueError, match="stage 1 .* is not a choice of that stage"):
        space.encode(other)


def test_the_supernet_of_a_held_space_holds_only_the_held_block_kinds(base, ref):
    shapes = stage_shapes(s.hold(base, ["block"], from_arch=ref))
    assert all(set(sh.kinds) <= {FUSED, FUSED_E1} for sh in shapes[:3])
    assert not any(set(sh.kinds) & {FUSED, FUSED_E1} for sh in shapes[3:])
    assert any(FUSED in sh.kinds for sh in stage_shapes(base)[3:])


@pytest.mark.parametrize("kwargs, message", [
    ({"decisions": ["blok"]}, "hold.decisions: 'blok' is not a decision of efficientnet_edgetpu; allowed: "
                              "activation, block, expansion, filters, kernel, repeats, se (every stage) or one "
                              "stage's, e.g. s1.block (did you mean 'block'?)"),
    ({"decisions": ["s7.block"]}, "hold.decisions: 's7.block' is not a decision"),
    ({"decisions": ["block"], "from_arch": None}, "hold.arch: needed by hold.decisions (block)"),
    ({"values": {"kernel": 7}}, "hold.values.kernel: 7 is not a choice; allowed: 3, 5"),
    ({}, "hold: holds nothing; give decisions (with arch) or values"),
    ({"decisions": ["block", "kernel", "expansion", "filters", "repeats", "activation", "se"]},
     "hold: held space: every decision of efficientnet_edgetpu is held, so there is nothing to search"),
])
def test_bad_holds_name_the_field(base, ref, kwargs, message):
    kwargs = {"from_arch": ref, **kwargs}
    with pytest.raises(ValueError) as e:
        s.hold(base, kwargs.pop("decisions", ()), **kwargs)
    assert message in str(e.value)


def test_an_arch_of_another_space_is_refused_with_the_space_s_reason(base):
    with pytest.raises(ValueError, match="hold.arch: arch is not in space efficientnet_edgetpu"):
        s.hold(base, ["block"], from_arch=s.reference("mobilenet_v2", resolution=128, num_classes=10))


def test_held_space_needs_a_stagewise_base():
    class Flat(s.SearchSpace):
        name = "flat"

        def decisions(self):
            return [s.Decision("k", (3, 5))]

    with pytest.raises(ValueError, match="not a StagewiseSpace"):
        HeldSpace(Flat(), {"k": 3})


def test_an_experiment_s_space_hold_is_the_space_every_part_of_the_search_gets():
    from nas.config.experiment import parse_experiment
    from nas.run.launch import with_classes
    from nas.ledger.ledger import make_base_space, make_controller, make_space

    cfg = parse_experiment({
        "version": 1, "space": {"name": "efficientnet_edgetpu", "resolution": 32, "width": 0.25, "depth": 0.25,
                                "hold": {"arch": "efficientnet_edgetpu_s", "decisions": ["block"],
                                         "values": {"s1.kernel": 5}}},
        "controller": {"name": "random"}, "reward": {"target_ms": 1.8},
        "data": {"source": "digits", "limit": 100}, "budget": {"trials": 2}})
    cfg = with_classes(cfg)  # the data's 10 classes fill the base space's head, the hold still applies
    assert cfg.space.num_classes == 10
    space = make_space(cfg)
    assert isinstance(space, HeldSpace) and space.num_classes == 10
    assert make_base_space(cfg).contains(space.sample(0))
    arch = make_controller(cfg, space).ask().arch
    assert [b.type for b in arch.stages[:3]] == ["fused_mbconv"] * 3 and arch.stages[0].kernel == 5


def test_from_arch_takes_a_reference_name_scaled_to_the_space_or_an_arch_string(base, ref):
    by_name = s.hold(base, ["block"], from_arch="efficientnet_edgetpu_s")
    assert by_name.held == s.hold(base, ["block"], from_arch=ref).held
    assert s.hold(base, ["block"], from_arch=ref.to_string()).held == by_name.held
    with pytest.raises(ValueError, match=r"^hold.arch: 'nope' is neither a reference \(efficientnet_edgetpu_s, "):
        s.hold(base, ["block"], from_arch="nope")
