"""The OneRoster query parameters parsed into a typed query (pure): the binding's
filter grammar, sort, fields, paging; any text is a Query or a QueryError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rosterdrop.outlets.oneroster.query import (
    MAX_LIMIT,
    Junction,
    Minor,
    Op,
    Predicate,
    QueryError,
    parse_filter,
    parse_query,
)


def test_and_binds_tighter_than_or() -> None:
    """``a AND b OR c`` is (a AND b) OR c; operators are read longest first."""
    parsed = parse_filter("givenName='Ann' AND grades>='09' OR familyName~'O''Brien'")
    assert parsed == Junction((
        (Predicate("givenName", Op.EQ, "Ann"), Predicate("grades", Op.GE, "09")),
        (Predicate("familyName", Op.CONTAINS, "O'Brien"),),
    ))


@pytest.mark.parametrize("text", [
    "givenName=Ann", "givenName='Ann", "='x'", "a=='x'", "a='x' XOR b='y'", "a='x' AND",
    "a='x'b='y'",
])
def test_malformed_filters_are_invalid_filter_field(text: str) -> None:
    """Each malformed filter is one QueryError naming the problem's position."""
    with pytest.raises(QueryError) as caught:
        parse_filter(text)
    assert caught.value.minor is Minor.INVALID_FILTER_FIELD
    assert caught.value.status == 400


def test_paging_sort_and_fields() -> None:
    """limit is capped at MAX_LIMIT (the asked value kept), orderBy defaults to asc."""
    query = parse_query({"limit": "50000", "offset": "20", "sort": "familyName,givenName",
                         "orderBy": "DESC", "fields": "sourcedId, username"})
    assert (query.limit, query.limit_asked, query.offset) == (MAX_LIMIT, 50000, 20)
    assert query.sort == ("familyName", "givenName") and query.descending
    assert query.fields == ("sourcedId", "username")
    assert parse_query({}).limit == 100
    for params, minor in [({"limit": "0"}, Minor.INVALID_DATA),
                          ({"offset": "x"}, Minor.INVALID_DATA),
                          ({"orderBy": "up"}, Minor.INVALID_SORT_FIELD),
                          ({"fields": ","}, Minor.INVALID_SELECTION_FIELD)]:
        with pytest.raises(QueryError) as caught:
            parse_query(params)
        assert caught.value.minor is minor


def test_scoping_adds_to_every_or_group() -> None:
    """A nested route's predicate narrows each OR group, so OR cannot escape it."""
    query = parse_query({"filter": "a='1' OR b='2'"}).also(Predicate("role", Op.EQ, "student"))
    assert query.filter is not None
    assert all(group[-1] == Predicate("role", Op.EQ, "student")
               for group in query.filter.any_of)


@given(st.dictionaries(st.sampled_from(["limit", "offset", "filter", "sort", "orderBy",
                                        "fields"]), st.text(max_size=60)))
def test_any_parameters_give_a_query_or_a_query_error(params: dict[str, str]) -> None:
    """No text makes the parser raise anything but QueryError."""
    try:
        query = parse_query(params)
    except QueryError as error:
        assert error.description
    else:
        assert 1 <= query.limit <= MAX_LIMIT
