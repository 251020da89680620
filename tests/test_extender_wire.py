"""The prioritize answer is spliced as text for speed; it must be byte for byte what a JSON encoder writes."""

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extender.wire import priority_list
from guardgrid.placement import MAX_SCORE


def _encoded(names: list[str], scores: list[int]) -> bytes:
    return orjson.dumps([{"Host": name, "Score": score} for name, score in zip(names, scores)])


def test_node_names_are_answered_as_a_host_priority_list():
    assert priority_list(["worker-1", "worker-2.zone-a"], [10, 0]) == \
        b'[{"Host":"worker-1","Score":10},{"Host":"worker-2.zone-a","Score":0}]'
    assert priority_list([], []) == b"[]"


@pytest.mark.parametrize("name", ['quo"te', "back\\slash", "tab\there", "new\nline", "ünïcode-node", "\x7f"])
def test_names_that_need_escaping_are_encoded_correctly(name):
    assert priority_list([name, "plain"], [3, 4]) == _encoded([name, "plain"], [3, 4])


def test_scores_outside_the_scheduler_range_are_still_valid_json_but_never_produced_by_scores():
    assert priority_list(["a"], [11]) == _encoded(["a"], [11])  # the encoder path, not the splice table


def test_mismatched_lengths_are_a_bug_not_a_short_answer():
    with pytest.raises(ValueError):
        priority_list(["a", "b"], [1])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=25), st.integers(min_value=0, max_value=MAX_SCORE)), max_size=30))
def test_any_names_and_scores_encode_exactly_as_json(entries):
    names = [name for name, _ in entries]
    scores = [score for _, score in entries]
    answer = priority_list(names, scores)
    assert answer == _encoded(names, scores)
    assert orjson.loads(answer) == [{"Host": n, "Score": s} for n, s in entries]
