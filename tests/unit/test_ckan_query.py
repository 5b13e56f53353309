"""The Solr query grammar of the CKAN API and its mapping to conditions on the indexed fields."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.publisher.portal import ckan, solr
from services.publisher.portal.repository import AllOf, AnyOf, Cond, Everything, Negated, compile_filter
from services.publisher.portal.solr import And, MatchAll, Not, Or, Range, Term
from tests.factories import MARBURG, OFFENBACH

NOW = datetime(2026, 5, 10, 12, 30, tzinfo=UTC)


class TestGrammar:
    @pytest.mark.parametrize(("text", "tree"), [
        ("", MatchAll()),
        ("*:*", MatchAll()),
        ("name:parken", Term("name", "parken")),
        ("Parken Verkehr", And((Term(None, "Parken"), Term(None, "Verkehr")))),
        ("organization:a OR organization:b", Or((Term("organization", "a"), Term("organization", "b")))),
        ("-organization:x", Not(Term("organization", "x"))),
        ("NOT tags:x AND tags:y", And((Not(Term("tags", "x")), Term("tags", "y")))),
        ("organization:(a OR b)", Or((Term("organization", "a"), Term("organization", "b")))),
        ('tags:"Öffentlicher Raum"', Term("tags", "Öffentlicher Raum", phrase=True)),
        ("name:park*", Term("name", "park", prefix=True)),
        ("metadata_modified:[2024-05-01T10:00:00.123456Z TO *]",
         Range("metadata_modified", "2024-05-01T10:00:00.123456Z", None)),
        ("metadata_created:{NOW-1DAY TO NOW]", Range("metadata_created", "NOW-1DAY", "NOW", False, True)),
        ("a || b && c", Or((Term(None, "a"), And((Term(None, "b"), Term(None, "c")))))),
        ("ANDROID ORT", And((Term(None, "ANDROID"), Term(None, "ORT")))),
        (r"name:a\:b", Term("name", "a:b")),
    ])
    def test_parses_to_the_tree(self, text: str, tree: solr.Node) -> None:
        assert solr.parse(text) == tree

    @pytest.mark.parametrize("text", ["organization:", "(a", "x:[a TO]", "a OR", ")", 'tags:"offen'])
    def test_broken_syntax_is_refused(self, text: str) -> None:
        with pytest.raises(solr.QuerySyntaxError):
            solr.parse(text)


class TestHarvesterQueries:
    def test_organization_include_filter_is_an_alternative(self) -> None:
        where, _ = ckan.parse_query("organization:marburg OR organization:offenbach-am-main", NOW)
        assert where == AnyOf((Cond("municipality", MARBURG), Cond("municipality", OFFENBACH)))

    def test_exclude_filters_and_incremental_range_combine(self) -> None:
        where, _ = ckan.parse_query(
            "-organization:marburg -groups:envi metadata_modified:[2026-05-09T11:30:00.123456Z TO *]", NOW)
        assert where == AllOf((
            Negated(Cond("municipality", MARBURG)),
            Negated(Cond("theme", "http://publications.europa.eu/resource/authority/data-theme/ENVI")),
            AllOf((Cond("modified_ge", datetime(2026, 5, 9, 11, 30, 0, 123456, tzinfo=UTC)),)),
        ))

    def test_date_math_relative_to_now(self) -> None:
        where, _ = ckan.parse_query("metadata_created:{NOW/DAY-7DAYS TO NOW}", NOW)
        assert where == AllOf((Cond("created_gt", datetime(2026, 5, 3, tzinfo=UTC)), Cond("created_lt", NOW)))

    def test_unknown_organization_matches_nothing(self) -> None:
        where, _ = ckan.parse_query("organization:atlantis", NOW)
        assert where == Cond("false")

    @pytest.mark.parametrize("text", ["farbe:blau", "title:[a TO b]", "metadata_modified:[gestern TO *]",
                                      "organization:mar*"])
    def test_unsupported_queries_are_search_query_errors(self, text: str) -> None:
        with pytest.raises(ckan.CkanError) as exc:
            ckan.parse_query(text, NOW)
        assert exc.value.status == 409
        assert exc.value.kind == "Search Query Error"


class TestCompile:
    def test_values_are_bound_never_written_into_the_sql(self) -> None:
        args: list[object] = []
        evil = "x'); DROP TABLE portal_datasets; --"
        sql = compile_filter(AllOf((Negated(Cond("name", evil)), AnyOf((Cond("keyword", "a"), Everything())))), args)
        assert evil not in sql
        assert args == [evil, "a"]
        assert sql == "(NOT coalesce(d.name = $1, false) AND (coalesce($2 = ANY(d.keywords), false) OR true))"
