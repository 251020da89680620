"""The request-wide name -> row index must agree exactly with a plain dict, including for absent names."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from guardgrid.nameindex import NameIndex
from guardgrid.records import NodeRecord
from guardgrid.state import NodeTable


class _FixedHash(str):
    """A name whose hash we choose, to force clashes and crowded buckets."""

    value: int = 0

    def __hash__(self) -> int:
        return self.value


def _named(text: str, value: int) -> _FixedHash:
    name = _FixedHash(text)
    name.value = value
    return name


def test_known_names_get_their_rows_and_unknown_ones_minus_one():
    names = [f"openb-node-{i:04d}" for i in range(5000)]
    index = NameIndex(names)
    asked = ["openb-node-0042", "not-a-node", "openb-node-4999", "openb-node-0000", ""]
    assert index.rows(asked).tolist() == [42, -1, 4999, 0, -1]


def test_names_decoded_from_a_request_are_found_like_the_originals():
    names = [f"worker-{i}" for i in range(300)]
    fresh = [name.encode().decode() for name in reversed(names)]  # other objects, same text
    assert NameIndex(names).rows(fresh).tolist() == list(range(299, -1, -1))


def test_an_empty_table_and_an_empty_request_are_answered():
    assert NameIndex([]).rows(["a", "b"]).tolist() == [-1, -1]
    assert NameIndex(["a"]).rows([]).tolist() == []


def test_names_crowding_one_bucket_grow_the_table_until_they_fit():
    names = [_named(f"n{i}", i << 13) for i in range(16)]  # same low 13 bits: one bucket until 16384
    assert NameIndex(names).rows(names).tolist() == list(range(16))


def test_two_known_names_sharing_a_hash_fall_back_to_exact_lookups():
    first, second = _named("alpha", 7), _named("beta", 7)
    index = NameIndex([first, second])
    assert index.rows([second, first, _named("gamma", 7)]).tolist() == [1, 0, -1]


def test_the_node_table_answers_whole_requests_through_its_name_index():
    table = NodeTable.build([NodeRecord(name=n, uid=n, allocatable_memory=1) for n in ("c", "a", "b")], 1)
    assert table.name_index.rows(["a", "b", "c", "d"]).tolist() == [table.index[n] for n in "abc"] + [-1]


@settings(max_examples=60, deadline=None)
@given(known=st.lists(st.text(min_size=1, max_size=30), unique=True, max_size=200),
       others=st.lists(st.text(max_size=30), max_size=50))
def test_rows_agree_with_a_dict_for_any_names(known, others):
    exact = {name: i for i, name in enumerate(known)}
    asked = known[::-1] + others
    expected = np.array([exact.get(name, -1) for name in asked], dtype=np.int64)
    assert NameIndex(known).rows(asked).tolist() == expected.tolist()
