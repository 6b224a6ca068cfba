"""Pairing a candidate's inputs and outputs with the reference's, never by guess."""

import pytest

from bnfreeze.errors import InputError
from bnfreeze.io.signature import TensorSpec
from bnfreeze.verify.matching import canonical, match, parse_map


def spec(name, *shape):
    return TensorSpec(name, (None, *shape), "float32")


def pairs(result):
    return [(p.reference.name, p.candidate.name, p.how) for p in result]


def test_canonical_names_drop_only_decorations():
    assert canonical("serving_default_digits:0") == "digits"
    assert canonical("digits:0") == "digits"
    assert canonical("StatefulPartitionedCall:1") == "StatefulPartitionedCall:1"  # output 1 stays output 1
    assert canonical("Identity_1") == "Identity_1"


def test_same_name_then_decorated_name():
    ref = [spec("a", 4), spec("b", 4)]
    assert pairs(match("output", ref, [spec("b", 4), spec("a", 4)])) == [("a", "a", "name"), ("b", "b", "name")]
    cand = [spec("serving_default_b:0", 4), spec("serving_default_a:0", 4)]
    assert pairs(match("input", ref, cand)) == [("a", "serving_default_a:0", "canonical name"),
                                               ("b", "serving_default_b:0", "canonical name")]


def test_decorated_names_that_collide_are_not_used():
    ref = [spec("x", 4), spec("y", 4)]
    cand = [spec("x:0", 4), spec("serving_default_x", 4)]  # both would become "x"
    with pytest.raises(InputError, match="cannot tell which inputs"):
        match("input", ref, cand)


def test_one_each_pairs_by_position_whatever_the_names():
    assert pairs(match("output", [spec("probs", 10)], [spec("Identity", 10)])) == [("probs", "Identity", "position")]


def test_two_outputs_of_one_shape_with_other_names_are_ambiguous():
    ref = [spec("head_a", 4), spec("head_b", 4)]
    cand = [spec("Identity", 4), spec("Identity_1", 4)]
    with pytest.raises(InputError) as error:
        match("output", ref, cand, reference_label="ref.onnx", candidate_label="cand.tflite")
    message = str(error.value)
    assert "\n" not in message
    for name in ("ref.onnx", "cand.tflite", "head_a (?, 4)", "head_b (?, 4)", "Identity (?, 4)", "Identity_1 (?, 4)",
                 "--output-map REF=CAND"):
        assert name in message


def test_an_explicit_map_settles_it():
    ref = [spec("head_a", 4), spec("head_b", 4)]
    cand = [spec("Identity", 4), spec("Identity_1", 4)]
    result = match("output", ref, cand, {"head_a": "Identity_1", "head_b": "Identity"})
    assert pairs(result) == [("head_a", "Identity_1", "map"), ("head_b", "Identity", "map")]
    # one entry is enough: the other is then the one left on each side
    result = match("output", ref, cand, {"head_b": "Identity"})
    assert pairs(result) == [("head_a", "Identity_1", "position"), ("head_b", "Identity", "map")]


def test_a_map_entry_for_a_name_the_reference_lacks_is_bad_input():
    with pytest.raises(InputError, match="has no output of that name"):
        match("output", [spec("a", 4)], [spec("b", 4)], {"c": "b"})


def test_distinct_shapes_single_each_other_out():
    ref = [spec("boxes", 4), spec("scores", 10)]
    cand = [spec("StatefulPartitionedCall:1", 10), spec("StatefulPartitionedCall:0", 4)]
    assert pairs(match("output", ref, cand)) == [("boxes", "StatefulPartitionedCall:0", "shape"),
                                                ("scores", "StatefulPartitionedCall:1", "shape")]


def test_positional_names_pair_by_position_only_against_an_ordered_side():
    ref = [spec("head_a", 4), spec("head_b", 4)]
    cand = [spec("output_1", 4), spec("output_0", 4)]  # a SavedModel signature: names say the position
    assert pairs(match("output", ref, cand)) == [("head_a", "output_0", "position"), ("head_b", "output_1", "position")]
    # a TFLite file without a signature may list its outputs in another order: no pairing by position
    with pytest.raises(InputError, match="cannot tell"):
        match("output", [spec("Identity", 4), spec("Identity_1", 4)], cand, reference_ordered=False)


def test_extra_candidate_outputs_are_allowed_once_every_reference_output_pairs():
    result = match("output", [spec("probs", 10)], [spec("logits", 10), spec("probs", 10)])
    assert pairs(result) == [("probs", "probs", "name")]
    with pytest.raises(InputError, match="the counts differ"):
        match("output", [spec("probs", 10)], [spec("a", 10), spec("b", 10)])


def test_inputs_must_pair_completely():
    with pytest.raises(InputError, match="has 2 inputs, the reference has 1"):
        match("input", [spec("x", 4)], [spec("x", 4), spec("mask", 4)])


def test_parse_map():
    assert parse_map("a=StatefulPartitionedCall:1, b = Identity", "--output-map") == {
        "a": "StatefulPartitionedCall:1", "b": "Identity"}
    assert parse_map({"a": "b"}, "x") == {"a": "b"}
    assert parse_map(None, "x") == {}
    for bad in ("a", "a=", "=b", "a=x,a=y", "a=x,b=x"):
        with pytest.raises(InputError):
            parse_map(bad, "--output-map")
