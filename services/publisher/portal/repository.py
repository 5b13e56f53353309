"""All SQL of the data portal (raw asyncpg, parameters always bound)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import asyncpg
import orjson

from shared.db import Conn

DATASET_COLUMNS = ("id, name, municipality, status, version, title, description, keywords, themes, licence, "
                   "formats, document, created_at, modified_at")


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()  # datetimes as RFC 3339


def loads(value: str | None) -> Any:
    """Decode a jsonb column (asyncpg hands jsonb over as text)."""
    return None if value is None else orjson.loads(value)


async def key_scope(conn: Conn, key_hash: str) -> asyncpg.Record | None:
    """Label and municipalities of an active key, or None."""
    return await conn.fetchrow(
        "SELECT label, municipalities FROM portal_api_keys WHERE key_hash = $1 AND revoked_at IS NULL", key_hash
    )


async def insert_key(conn: Conn, key_hash: str, label: str, municipalities: list[str]) -> None:
    await conn.execute(
        "INSERT INTO portal_api_keys (key_hash, label, municipalities) VALUES ($1, $2, $3)",
        key_hash, label, municipalities,
    )


async def get_dataset(conn: Conn, name: str, *, for_update: bool = False) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(f"SELECT {DATASET_COLUMNS} FROM portal_datasets WHERE name = $1{lock}", name)


async def get_dataset_by_id(conn: Conn, dataset_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {DATASET_COLUMNS} FROM portal_datasets WHERE id = $1::uuid", dataset_id)


@dataclass(frozen=True)
class DatasetRow:
    """The indexed columns of a dataset plus its full document."""

    id: uuid.UUID
    name: str
    municipality: str
    status: str
    version: int
    title: str
    description: str
    keywords: list[str]
    themes: list[str]
    licence: str
    formats: list[str]
    document: dict[str, Any]
    created_at: datetime
    modified_at: datetime


async def insert_dataset(conn: Conn, d: DatasetRow) -> bool:
    """Insert a new dataset; False when the name is taken."""
    status = await conn.execute(
        """INSERT INTO portal_datasets (id, name, municipality, status, version, title, description, keywords,
               keyword_text, themes, licence, formats, document, created_at, modified_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, array_to_string($8::text[], ' '), $9, $10, $11, $12::jsonb, $13, $14)
           ON CONFLICT (name) DO NOTHING""",
        d.id, d.name, d.municipality, d.status, d.version, d.title, d.description, d.keywords, d.themes,
        d.licence, d.formats, _json(d.document), d.created_at, d.modified_at,
    )
    return bool(status == "INSERT 0 1")


async def update_dataset(conn: Conn, d: DatasetRow) -> None:
    await conn.execute(
        """UPDATE portal_datasets SET status = $2, version = $3, title = $4, description = $5, keywords = $6,
               keyword_text = array_to_string($6::text[], ' '), themes = $7, licence = $8, formats = $9,
               document = $10::jsonb,
               modified_at = $11
           WHERE id = $1""",
        d.id, d.status, d.version, d.title, d.description, d.keywords, d.themes, d.licence, d.formats,
        _json(d.document), d.modified_at,
    )


async def insert_version(
    conn: Conn, dataset_id: uuid.UUID, version: int, status: str, action: str, document: dict[str, Any],
    changed_by: str, changed_at: datetime,
) -> None:
    await conn.execute(
        """INSERT INTO portal_dataset_versions (dataset_id, version, status, action, document, changed_by, changed_at)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)""",
        dataset_id, version, status, action, _json(document), changed_by, changed_at,
    )


async def history(conn: Conn, dataset_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT version, status, action, document, changed_by, changed_at FROM portal_dataset_versions
           WHERE dataset_id = $1 ORDER BY version""",
        dataset_id,
    )


async def insert_file(
    conn: Conn, file_id: uuid.UUID, dataset_id: uuid.UUID, filename: str, fmt: str, media_type: str,
    content: bytes, sha256: str, report: dict[str, Any] | None,
) -> None:
    await conn.execute(
        """INSERT INTO portal_files (id, dataset_id, filename, format, media_type, byte_size, sha256, content, report)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)""",
        file_id, dataset_id, filename, fmt, media_type, len(content), sha256, content,
        None if report is None else _json(report),
    )


async def published_file(conn: Conn, file_id: uuid.UUID, *, with_content: bool = True) -> asyncpg.Record | None:
    """A hosted file of a published dataset (withdrawn datasets serve nothing)."""
    content = "f.content" if with_content else "NULL::bytea AS content"
    return await conn.fetchrow(
        f"""SELECT f.id, f.filename, f.format, f.media_type, f.byte_size, f.sha256, f.report, f.created_at, {content}
            FROM portal_files f JOIN portal_datasets d ON d.id = f.dataset_id
            WHERE f.id = $1 AND d.status = 'published'""",
        file_id,
    )


async def file_head(conn: Conn, file_id: uuid.UUID, limit_bytes: int) -> asyncpg.Record | None:
    """The first bytes of a hosted file (for previews) and its report."""
    return await conn.fetchrow(
        "SELECT substring(content FROM 1 FOR $2) AS head, byte_size, report FROM portal_files WHERE id = $1",
        file_id, limit_bytes,
    )


@dataclass
class SearchQuery:
    """Full-text query and facet filters (values within one facet are alternatives)."""

    text: str | None = None
    municipalities: list[str] = field(default_factory=list)
    themes: list[str] = field(default_factory=list)
    formats: list[str] = field(default_factory=list)
    licences: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    sort: Literal["relevance", "date", "title"] = "relevance"


def _where(q: SearchQuery) -> tuple[str, list[Any]]:
    # Only the conditions in use are added, so PostgreSQL plans each shape with the GIN index.
    clauses = ["status = 'published'"]
    args: list[Any] = []
    if q.text:
        args.append(q.text)
        clauses.append(f"search @@ websearch_to_tsquery('german', ${len(args)})")
    for column, values, op in (
        ("municipality", q.municipalities, "= ANY"), ("themes", q.themes, "&&"), ("formats", q.formats, "&&"),
        ("licence", q.licences, "= ANY"), ("keywords", q.keywords, "&&"),
    ):
        if values:
            args.append(values)
            clauses.append(f"{column} {op}(${len(args)}::text[])" if op == "= ANY" else f"{column} && ${len(args)}")
    return " AND ".join(clauses), args


def _order(q: SearchQuery) -> str:
    if q.sort == "relevance" and q.text:
        return "ts_rank_cd(search, websearch_to_tsquery('german', $1)) DESC, modified_at DESC, name"
    if q.sort == "title":
        return "title, name"
    return "modified_at DESC, name"


FACET_SQL = """SELECT 'municipality' AS facet, municipality::text AS value, count(*) AS n FROM m GROUP BY 2
            UNION ALL SELECT 'theme', t, count(*) FROM m, unnest(themes) t GROUP BY 2
            UNION ALL SELECT 'format', f, count(*) FROM m, unnest(formats) f GROUP BY 2
            UNION ALL SELECT 'licence', licence, count(*) FROM m GROUP BY 2
            UNION ALL SELECT 'keyword', k, count(*) FROM m, unnest(keywords) k GROUP BY 2"""


async def search(conn: Conn, q: SearchQuery, limit: int, offset: int) -> tuple[int, list[asyncpg.Record]]:
    """One page of matches and the total count."""
    where, args = _where(q)
    args += [limit, offset]
    rows = await conn.fetch(
        f"""SELECT {DATASET_COLUMNS}, count(*) OVER () AS total FROM portal_datasets WHERE {where}
            ORDER BY {_order(q)} LIMIT ${len(args) - 1} OFFSET ${len(args)}""",
        *args,
    )
    if rows:
        return int(rows[0]["total"]), rows
    if offset == 0:
        return 0, []
    total = await conn.fetchval(f"SELECT count(*) FROM portal_datasets WHERE {where}", *args[:-2])
    return int(total), []


async def search_with_facets(
    conn: Conn, q: SearchQuery, limit: int, offset: int
) -> tuple[int, list[asyncpg.Record], list[tuple[str, str, int]]]:
    """One page of matches, the total and (facet, value, count) over all matches, in one round trip."""
    where, args = _where(q)
    args += [limit, offset]
    # The match set is computed once; the facets ride along on every page row (or on one empty row).
    rows = await conn.fetch(
        f"""WITH m AS MATERIALIZED (SELECT {DATASET_COLUMNS}, search FROM portal_datasets WHERE {where}),
                 f AS (SELECT (SELECT count(*) FROM m) AS total,
                              (SELECT json_agg(json_build_array(facet, value, n) ORDER BY facet, n DESC, value)
                               FROM ({FACET_SQL}) x) AS facets),
                 p AS (SELECT {DATASET_COLUMNS} FROM m ORDER BY {_order(q)}
                       LIMIT ${len(args) - 1} OFFSET ${len(args)})
            SELECT f.total, f.facets, p.* FROM f LEFT JOIN p ON true""",
        *args,
    )
    facet_rows = [(str(a), str(b), int(c)) for a, b, c in loads(rows[0]["facets"]) or []]
    return int(rows[0]["total"]), [r for r in rows if r["id"] is not None], facet_rows


async def published(conn: Conn, limit: int, offset: int) -> list[asyncpg.Record]:
    """Published datasets in a stable order (catalog, harvesting)."""
    return await conn.fetch(
        f"""SELECT {DATASET_COLUMNS} FROM portal_datasets WHERE status = 'published'
            ORDER BY created_at, name LIMIT $1 OFFSET $2""",
        limit, offset,
    )


async def tags(conn: Conn, prefix: str | None, limit: int) -> list[str]:
    rows = await conn.fetch(
        """SELECT DISTINCT k FROM portal_datasets, unnest(keywords) k
           WHERE status = 'published' AND ($1::text IS NULL OR k ILIKE $1 || '%') ORDER BY k LIMIT $2""",
        prefix, limit,
    )
    return [r["k"] for r in rows]


# --- CKAN Action API: one query over the registered and the KPI datasets ----------------------------------------


@dataclass(frozen=True, slots=True)
class Cond:
    """One indexed condition of a CKAN query (`kind` from `CONDITIONS`), its value bound as a parameter."""

    kind: str
    value: Any = None


@dataclass(frozen=True, slots=True)
class AllOf:
    items: tuple[CkanFilter, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    items: tuple[CkanFilter, ...]


@dataclass(frozen=True, slots=True)
class Negated:
    item: CkanFilter


@dataclass(frozen=True, slots=True)
class Everything:
    pass


CkanFilter = Cond | AllOf | AnyOf | Negated | Everything

# Each condition as SQL over the row set `d`; `{}` is where the bound parameter's placeholder goes.
CONDITIONS: dict[str, str] = {
    "text": "d.search @@ plainto_tsquery('german', {})",
    "phrase": "d.search @@ phraseto_tsquery('german', {})",
    "title": "to_tsvector('german', d.title) @@ plainto_tsquery('german', {})",
    "notes": "to_tsvector('german', d.description) @@ plainto_tsquery('german', {})",
    "id": "d.id = {}",
    "name": "d.name = {}",
    "name_prefix": "starts_with(d.name, {})",
    "municipality": "d.municipality = {}",
    "theme": "{} = ANY(d.themes)",
    "keyword": "{} = ANY(d.keywords)",
    "keyword_prefix": "EXISTS (SELECT 1 FROM unnest(d.keywords) k WHERE starts_with(k, {}))",
    "format": "{} = ANY(d.formats)",
    "licence": "d.licence = {}",
    "source": "d.source = {}",
    "modified_ge": "d.modified_at >= {}", "modified_gt": "d.modified_at > {}",
    "modified_le": "d.modified_at <= {}", "modified_lt": "d.modified_at < {}",
    "created_ge": "d.created_at >= {}", "created_gt": "d.created_at > {}",
    "created_le": "d.created_at <= {}", "created_lt": "d.created_at < {}",
    "num_resources_ge": "d.num_resources >= {}", "num_resources_le": "d.num_resources <= {}",
    "num_tags_ge": "cardinality(d.keywords) >= {}", "num_tags_le": "cardinality(d.keywords) <= {}",
    "false": "false",
}

# Sort keys of CKAN's `sort` parameter as columns of `d` (the direction is appended: ASC or DESC).
SORT_COLUMNS: dict[str, str] = {
    "id": "d.id", "name": "d.name", "title_string": "lower(d.title)", "title": "lower(d.title)",
    "metadata_modified": "d.modified_at", "metadata_created": "d.created_at", "num_resources": "d.num_resources",
    "num_tags": "cardinality(d.keywords)",
}

_ROWS = """d AS (
    SELECT id::text AS id, name, municipality::text AS municipality, title, description, keywords, themes, licence,
           formats, created_at, modified_at, search, jsonb_array_length(document -> 'distributions') AS num_resources,
           'portal' AS source
    FROM portal_datasets WHERE status = 'published'
    UNION ALL
    SELECT k.id, k.name, k.municipality, k.title, k.description, k.keywords, k.themes, k.licence, k.formats,
           k.created_at, k.modified_at,
           setweight(to_tsvector('german', k.title), 'A')
             || setweight(to_tsvector('german', array_to_string(k.keywords, ' ')), 'B')
             || setweight(to_tsvector('german', k.description), 'C'),
           k.num_resources, 'kpi'
    FROM jsonb_to_recordset($1::jsonb) AS k(id text, name text, municipality text, title text, description text,
         keywords text[], themes text[], licence text, formats text[], created_at timestamptz,
         modified_at timestamptz, num_resources int)
)"""

_CKAN_FACETS = """SELECT 'municipality' AS facet, municipality AS value, count(*) AS n FROM m
                   WHERE municipality IS NOT NULL GROUP BY 2
            UNION ALL SELECT 'theme', t, count(*) FROM m, unnest(themes) t GROUP BY 2
            UNION ALL SELECT 'format', f, count(*) FROM m, unnest(formats) f GROUP BY 2
            UNION ALL SELECT 'licence', licence, count(*) FROM m GROUP BY 2
            UNION ALL SELECT 'keyword', k, count(*) FROM m, unnest(keywords) k GROUP BY 2"""


def compile_filter(node: CkanFilter, args: list[Any]) -> str:
    """The filter as a SQL condition over `d`; every value is appended to `args` and bound, never formatted in."""
    if isinstance(node, Cond):
        template = CONDITIONS[node.kind]
        if "{}" not in template:
            return template
        args.append(node.value)
        # null-safe, as in Solr a negated field also matches the datasets without it (Hessen-wide: no organisation)
        return "coalesce(" + template.format(f"${len(args)}") + ", false)"
    if isinstance(node, Everything):
        return "true"
    if isinstance(node, Negated):
        return f"NOT {compile_filter(node.item, args)}"
    if not node.items:
        return "true" if isinstance(node, AllOf) else "false"
    joiner = " AND " if isinstance(node, AllOf) else " OR "
    return "(" + joiner.join(compile_filter(i, args) for i in node.items) + ")"


def _ckan_order(sort: list[tuple[str, bool]], rank_arg: int | None) -> str:
    parts = []
    for key, descending in sort:
        direction = " DESC" if descending else " ASC"
        if key == "score":
            if rank_arg is not None:
                parts.append(f"ts_rank_cd(search, plainto_tsquery('german', ${rank_arg})){direction}")
            continue
        parts.append(SORT_COLUMNS[key] + direction + " NULLS LAST")  # KPI datasets without data have no dates
    parts.append("d.name")  # a stable order for paging
    return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class CkanPage:
    total: int
    rows: list[tuple[str, str, str]]  # (source, id, name) in order
    facets: list[tuple[str, str, int]]


async def ckan_search(
    conn: Conn, kpi_rows: list[dict[str, Any]], where: CkanFilter, sort: list[tuple[str, bool]],
    rank_text: str | None, limit: int, offset: int, with_facets: bool,
) -> CkanPage:
    """One page of the registered and KPI datasets matching `where`, the total, and facet counts over all matches."""
    args: list[Any] = [_json(kpi_rows)]
    condition = compile_filter(where, args)
    rank_arg = None
    if rank_text and any(key == "score" for key, _ in sort):
        args.append(rank_text)
        rank_arg = len(args)
    args += [limit, offset]
    facets = f"(SELECT json_agg(json_build_array(facet, value, n)) FROM ({_CKAN_FACETS}) x)" if with_facets else "NULL"
    rows = await conn.fetch(
        f"""WITH {_ROWS},
                 m AS MATERIALIZED (SELECT * FROM d WHERE {condition}),
                 f AS (SELECT (SELECT count(*) FROM m) AS total, {facets} AS facets),
                 p AS (SELECT d.source, d.id, d.name FROM m d ORDER BY {_ckan_order(sort, rank_arg)}
                       LIMIT ${len(args) - 1} OFFSET ${len(args)})
            SELECT f.total, f.facets, p.* FROM f LEFT JOIN p ON true""",
        *args,
    )
    facet_rows = [(str(a), str(b), int(c)) for a, b, c in loads(rows[0]["facets"]) or []]
    return CkanPage(int(rows[0]["total"]), [(r["source"], r["id"], r["name"]) for r in rows if r["id"] is not None],
                    facet_rows)


async def published_by_ids(conn: Conn, ids: list[str]) -> list[asyncpg.Record]:
    """Published datasets by id, in no particular order."""
    return await conn.fetch(
        f"SELECT {DATASET_COLUMNS} FROM portal_datasets WHERE status = 'published' AND id = ANY($1::uuid[])", ids
    )


async def published_names(conn: Conn) -> list[str]:
    rows = await conn.fetch("SELECT name FROM portal_datasets WHERE status = 'published' ORDER BY name")
    return [r["name"] for r in rows]


async def published_file_dataset(conn: Conn, file_id: uuid.UUID) -> asyncpg.Record | None:
    """The published dataset a distribution id (hosted or linked) belongs to."""
    return await conn.fetchrow(
        f"""SELECT {DATASET_COLUMNS} FROM portal_datasets
            WHERE status = 'published'
              AND document -> 'distributions' @> jsonb_build_array(jsonb_build_object('id', $1::text))
            LIMIT 1""",
        str(file_id),
    )
