"""Flow parsing: the table of DESIGN §2, compositions, and the errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gradstop import Flow, parse_flow
from gradstop.flows import BASES


@pytest.mark.parametrize(
    "text,k_phys,k_in",
    [("none", 1, 1), ("input", 1, 0), ("state", 0, 1), ("all", 0, 0), ("decay:0.9", 0.9, 0.9),
     ("input+decay:0.5", 0.5, 0.0), ("state+decay:0.5", 0.0, 0.5), ("truncate:4", 1, 1), (" Input + Truncate:32 ", 1, 0)],
)
def test_edge_weights(text, k_phys, k_in):
    flow = parse_flow(text)
    assert (flow.k_phys, flow.k_in) == (k_phys, k_in)


def test_truncation_cuts_every_k_steps():
    flow = parse_flow("input+truncate:3")
    assert [t for t in range(1, 10) if flow.cut_after(t)] == [3, 6, 9]
    assert not any(parse_flow("input").cut_after(t) for t in range(1, 10))


def test_combining_flows_read_none_and_input_with_the_same_modifiers():
    flow = parse_flow("combined+truncate:8")
    assert flow.combining
    assert [f.name for f in flow.components()] == ["truncate:8", "input+truncate:8"]
    with pytest.raises(ValueError, match="combines two gradients"):
        flow.k_phys
    assert parse_flow("input").components() == (parse_flow("input"),)


def test_flow_objects_pass_through_and_equal_their_strings():
    flow = Flow("input", decay=0.9)
    assert parse_flow(flow) is flow
    assert parse_flow("decay:0.9+input") == flow
    assert parse_flow("none+decay:0.9") == parse_flow("decay:0.9")


@given(st.sampled_from(sorted(BASES)), st.floats(0.0, 1.0), st.one_of(st.none(), st.integers(1, 500)))
def test_name_round_trips(base, decay, truncate):
    flow = Flow(base, decay, truncate)
    assert parse_flow(flow.name) == flow
    assert parse_flow(str(flow)) == flow


@pytest.mark.parametrize(
    "text,match",
    [
        ("bogus", "unknown flow part 'bogus'"),
        ("inputs", "unknown flow part 'inputs'"),
        ("decay:1.5", "decay γ must lie in \\[0, 1\\], got 1.5"),
        ("decay:-0.1", "decay γ must lie in \\[0, 1\\]"),
        ("decay:nan", "decay γ must lie in \\[0, 1\\]"),
        ("decay:x", "decay γ in flow 'decay:x' is not a valid float"),
        ("decay", "'decay' in flow 'decay' needs a parameter"),
        ("truncate:0", "truncate K must be an integer ≥ 1, got 0"),
        ("truncate:2.5", "truncate K in flow 'truncate:2.5' is not a valid int"),
        ("input+state", "gives two bases \\('all' already stops both edges\\)"),
        ("combined+input", "gives two bases"),
        ("decay:0.5+decay:0.9", "gives decay twice"),
        ("input+", "unknown flow part ''"),
        ("", "empty flow string"),
        ("input:3", "unknown flow part 'input:3'"),
    ],
)
def test_bad_flows_raise_and_list_the_valid_forms(text, match):
    with pytest.raises(ValueError, match=match) as err:
        parse_flow(text)
    assert "valid flows: one base out of none | input | state | all | combined | directional" in str(err.value)


def test_bad_flow_types_and_fields():
    with pytest.raises(ValueError, match="a flow is a string or gradstop.Flow, got int"):
        parse_flow(3)
    with pytest.raises(ValueError, match="unknown flow base 'bptt'"):
        Flow("bptt")
    with pytest.raises(ValueError, match="truncate K must be an integer ≥ 1"):
        Flow("none", truncate=True)
