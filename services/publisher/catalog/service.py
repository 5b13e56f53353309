"""DCAT-AP.de 3.0 catalog of the published datasets, built with rdflib from plain dataset descriptors.

Every dataset in the catalog is a `CatalogDataset`. Providers (`DatasetProvider`) return them; a
`CatalogRegistry` collects them from all registered providers, and `build_graph` turns one page of them into
an RDF graph (one `dcat:Catalog`, its datasets and distributions, Hydra paging). The KPI datasets of the
publisher are one provider (`kpi_datasets`); other parts of the publisher register their own.
"""

from __future__ import annotations

import math
import time as clock_time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any, Final, Literal
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from rdflib import BNode, Graph, Namespace, URIRef
from rdflib import Literal as RdfLiteral
from rdflib.namespace import DCAT, DCTERMS, FOAF, RDF, SKOS, XSD

from services.publisher.catalog import repository as catalog_repository
from services.publisher.kpis.definitions import DEFINITIONS
from shared import ckm
from shared.db import Conn
from shared.events.text import Text
from shared.iri import is_iri
from shared.reference import Municipality, municipalities, municipality_by_ags

# DCAT-AP 3.0 namespace (with a slash, as the DCAT-AP 3.0 SHACL shapes and ckanext-dcat use it; ADR 0060)
DCATAP: Final = Namespace("http://data.europa.eu/r5r/")
DCATDE: Final = Namespace("http://dcat-ap.de/def/dcatde/")
HYDRA: Final = Namespace("http://www.w3.org/ns/hydra/core#")
VCARD: Final = Namespace("http://www.w3.org/2006/vcard/ns#")

EU: Final = "http://publications.europa.eu/resource/authority/"
LICENCE_DL_BY_DE_2: Final = "http://dcat-ap.de/def/licenses/dl-by-de/2.0"
GEOCODING: Final = "http://dcat-ap.de/def/politicalGeocoding/"
LANGUAGE_DE: Final = EU + "language/DEU"
AVAILABLE: Final = EU + "planned-availability/AVAILABLE"
PUBLIC: Final = EU + "access-right/PUBLIC"
STATISTICAL: Final = EU + "dataset-type/STATISTICAL"
PUBLISHER_TYPE_LOCAL: Final = "http://purl.org/adms/publishertype/LocalAuthority"
HESSEN_STATE_KEY: Final = "06"
HESSEN_NAME: Final = "Hessen"
BERLIN: Final = ZoneInfo("Europe/Berlin")
RANGE_DAYS: Final = 30

# Serialisations offered at /catalog: format name -> (media type, file suffix, rdflib format)
RdfFormat = Literal["turtle", "xml", "json-ld"]
FORMATS: Final[dict[RdfFormat, tuple[str, str]]] = {
    "turtle": ("text/turtle", "ttl"),
    "xml": ("application/rdf+xml", "rdf"),
    "json-ld": ("application/ld+json", "jsonld"),
}


# --- descriptors ---------------------------------------------------------------------------------------------
# A descriptor holds only what all three serialisations can carry: texts without control characters (XML 1.0
# cannot hold most of them) and resources that are IRIs by RFC 3987 (Turtle writes them between <...> unescaped).
# A provider whose stored value breaks that gets a ValidationError for that one dataset and leaves it out.


def _iri(value: str) -> str:
    if not is_iri(value):
        raise ValueError("not an IRI (RFC 3987)")
    return value


def _code_or_iri(value: str) -> str:
    if value.startswith("http"):
        return _iri(value)
    if not value or not value.replace("_", "").isalnum() or not value.isascii():
        raise ValueError("neither a vocabulary code nor an IRI")
    return value


def _email(value: str) -> str:
    _iri(f"mailto:{value}")
    return value


Iri = Annotated[str, AfterValidator(_iri)]
CodeOrIri = Annotated[str, AfterValidator(_code_or_iri)]
CatalogText = Annotated[str, Text(100_000, min_chars=1, max_bytes=400_000, multiline=True, strict=False)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CatalogAgent(_Frozen):
    """A publisher (foaf:Agent)."""

    id: str = Field(pattern=r"^[A-Za-z0-9._-]+$", description="stable key, part of the agent's IRI")
    name: CatalogText = Field(description="name in German")
    type: Iri | None = Field(PUBLISHER_TYPE_LOCAL, description="ADMS publisher type IRI")


class CatalogContact(_Frozen):
    """A contact point (vcard:Organization); at least one of email, url, telephone."""

    name: CatalogText
    email: Annotated[str, AfterValidator(_email)] | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+$")
    url: Iri | None = Field(None, pattern=r"^https?://")
    telephone: str | None = Field(None, pattern=r"^\+?[0-9 ()/-]+$")

    @field_validator("telephone")
    @classmethod
    def _strip(cls, v: str | None) -> str | None:
        return v.strip() if v else v


class CatalogDistribution(_Frozen):
    """One way to get the data (dcat:Distribution)."""

    title: CatalogText
    description: CatalogText | None = None
    access_url: Iri = Field(pattern=r"^https?://")
    download_url: Iri | None = Field(None, pattern=r"^https?://")
    format: CodeOrIri = Field(description="EU file-type code (CSV, JSON, ...) or a full IRI")
    media_type: str = Field(pattern=r"^[a-z]+/[A-Za-z0-9.+-]+$", description="IANA media type, e.g. text/csv")
    license: Iri = LICENCE_DL_BY_DE_2
    attribution: CatalogText | None = Field(None, description="dcatde:licenseAttributionByText")


class CatalogDataset(_Frozen):
    """Metadata of one dataset (dcat:Dataset) in plain form; IRIs are derived from `id` and the base URL."""

    id: str = Field(pattern=r"^[A-Za-z0-9._-]+$", description="unique in the catalog, part of the dataset IRI")
    title: CatalogText = Field(description="German")
    description: CatalogText = Field(description="German")
    keywords: tuple[CatalogText, ...] = ()
    themes: tuple[CodeOrIri, ...] = Field((), description="EU data-theme codes, e.g. GOVE, or full IRIs")
    publisher: CatalogAgent
    contact_point: CatalogContact
    spatial_ags: str | None = Field(
        None, pattern=r"^\d{8}$", description="AGS of a municipality in the reference table; None = all of Hessen"
    )
    temporal_start: date | None = None
    temporal_end: date | None = None
    issued: datetime | None = None
    modified: datetime | None = None
    frequency: CodeOrIri | None = Field("DAILY", description="EU frequency code, e.g. DAILY, MONTHLY, or a full IRI")
    landing_page: Iri | None = Field(None, pattern=r"^https?://")
    distributions: tuple[CatalogDistribution, ...] = Field(min_length=1)

    @field_validator("spatial_ags")
    @classmethod
    def _known_ags(cls, v: str | None) -> str | None:
        if v is not None and v not in municipality_by_ags():
            raise ValueError(f"unknown municipality {v}")
        return v


@dataclass(frozen=True, slots=True)
class CatalogInfo:
    """Catalog-level metadata and where it is published."""

    base_url: str
    title: str
    description: str
    publisher: CatalogAgent
    contributor_id: str | None = None


@dataclass(frozen=True, slots=True)
class CatalogContext:
    """What a provider gets: a read-only connection and the public base URL for building links."""

    conn: Conn
    base_url: str


DatasetProvider = Callable[[CatalogContext], Awaitable[Sequence[CatalogDataset]]]


class DuplicateDatasetError(ValueError):
    """Two providers returned datasets with the same id."""


class CatalogRegistry:
    """The providers whose datasets make up the catalog, in registration order."""

    def __init__(self) -> None:
        self._providers: dict[str, DatasetProvider] = {}

    def register(self, name: str, provider: DatasetProvider) -> None:
        if name in self._providers:
            raise ValueError(f"provider {name!r} already registered")
        self._providers[name] = provider

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._providers)

    async def collect_from(self, ctx: CatalogContext, name: str) -> Sequence[CatalogDataset]:
        """The datasets of one provider (none if it is not registered)."""
        provider = self._providers.get(name)
        return await provider(ctx) if provider else ()

    async def collect(self, ctx: CatalogContext) -> list[CatalogDataset]:
        """All datasets of all providers, sorted by id (stable paging)."""
        seen: dict[str, str] = {}
        out: list[CatalogDataset] = []
        for name, provider in self._providers.items():
            for d in await provider(ctx):
                if d.id in seen:
                    raise DuplicateDatasetError(f"dataset {d.id!r} from {name!r} and {seen[d.id]!r}")
                seen[d.id] = name
                out.append(d)
        out.sort(key=lambda d: d.id)
        return out


# --- paging ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Page:
    number: int
    size: int
    total: int

    @property
    def last(self) -> int:
        return max(1, math.ceil(self.total / self.size))

    def slice(self, items: Sequence[CatalogDataset]) -> Sequence[CatalogDataset]:
        start = (self.number - 1) * self.size
        return items[start : start + self.size]


# --- graph ----------------------------------------------------------------------------------------------------


def _eu(kind: str, code: str) -> URIRef:
    return URIRef(code if code.startswith("http") else f"{EU}{kind}/{code}")


def _iana(media_type: str) -> URIRef:
    return URIRef(f"https://www.iana.org/assignments/media-types/{media_type}")


def geocoding_uri(m: Municipality | None) -> str:
    """Political-geocoding URI of a municipality (from the reference table) or of Hessen."""
    return m.political_geocoding_uri if m else f"{GEOCODING}stateKey/{HESSEN_STATE_KEY}"


def geocoding_level(m: Municipality | None) -> str:
    return f"{GEOCODING}Level/{'municipality' if m else 'state'}"


def catalog_uri(base_url: str) -> URIRef:
    return URIRef(f"{base_url}/catalog")


def dataset_uri(base_url: str, dataset_id: str) -> URIRef:
    return URIRef(f"{base_url}/catalog/datasets/{quote(dataset_id)}")


def page_url(base_url: str, fmt: RdfFormat, number: int, size: int, default_size: int) -> str:
    params: dict[str, int] = {"page": number}
    if size != default_size:
        params["page_size"] = size
    return f"{base_url}/catalog.{FORMATS[fmt][1]}?{urlencode(params)}"


def _bind(g: Graph) -> None:
    for prefix, ns in (
        ("dcat", DCAT), ("dcterms", DCTERMS), ("foaf", FOAF), ("dcatap", DCATAP), ("dcatde", DCATDE),
        ("hydra", HYDRA), ("vcard", VCARD), ("xsd", XSD), ("skos", SKOS),
    ):
        g.bind(prefix, ns, override=True)


def _agent(g: Graph, base_url: str, agent: CatalogAgent) -> URIRef:
    node = URIRef(f"{base_url}/catalog/publishers/{quote(agent.id)}")
    g.add((node, RDF.type, FOAF.Agent))
    g.add((node, FOAF.name, RdfLiteral(agent.name, lang="de")))
    if agent.type:
        g.add((node, DCTERMS.type, URIRef(agent.type)))
    return node


def _contact(g: Graph, c: CatalogContact) -> BNode:
    node = BNode()
    g.add((node, RDF.type, VCARD.Organization))
    g.add((node, VCARD.fn, RdfLiteral(c.name, lang="de")))
    if c.email:
        g.add((node, VCARD.hasEmail, URIRef(f"mailto:{c.email}")))
    if c.url:
        g.add((node, VCARD.hasURL, URIRef(c.url)))
    if c.telephone:
        g.add((node, VCARD.hasTelephone, URIRef("tel:" + "".join(ch for ch in c.telephone if ch in "+0123456789"))))
    return node


def _datetime(value: datetime) -> RdfLiteral:
    return RdfLiteral(value.isoformat(timespec="seconds"), datatype=XSD.dateTime)


def _dataset(g: Graph, info: CatalogInfo, d: CatalogDataset) -> URIRef:
    base = info.base_url
    node = dataset_uri(base, d.id)
    g.add((node, RDF.type, DCAT.Dataset))
    g.add((node, DCTERMS.identifier, RdfLiteral(str(node))))
    g.add((node, DCTERMS.title, RdfLiteral(d.title, lang="de")))
    g.add((node, DCTERMS.description, RdfLiteral(d.description, lang="de")))
    for kw in d.keywords:
        g.add((node, DCAT.keyword, RdfLiteral(kw, lang="de")))
    for theme in d.themes:
        g.add((node, DCAT.theme, _eu("data-theme", theme)))
    g.add((node, DCTERMS.publisher, _agent(g, base, d.publisher)))
    g.add((node, DCAT.contactPoint, _contact(g, d.contact_point)))
    g.add((node, DCTERMS.language, URIRef(LANGUAGE_DE)))
    g.add((node, DCTERMS.accessRights, URIRef(PUBLIC)))
    g.add((node, DCATAP.availability, URIRef(AVAILABLE)))
    g.add((node, DCTERMS.type, URIRef(STATISTICAL)))
    if info.contributor_id:
        g.add((node, DCATDE.contributorID, URIRef(info.contributor_id)))
    m = municipality_by_ags()[d.spatial_ags] if d.spatial_ags else None
    spatial = URIRef(geocoding_uri(m))
    g.add((spatial, RDF.type, DCTERMS.Location))
    # the name harvesters show for the area (ckanext-dcat reads it as the spatial label); no geometry is given,
    # as the reference data holds no verified coordinates of the cities
    g.add((spatial, SKOS.prefLabel, RdfLiteral(m.name if m else HESSEN_NAME, lang="de")))
    g.add((node, DCTERMS.spatial, spatial))
    g.add((node, DCATDE.politicalGeocodingLevelURI, URIRef(geocoding_level(m))))
    if d.temporal_start or d.temporal_end:
        period = BNode()
        g.add((period, RDF.type, DCTERMS.PeriodOfTime))
        if d.temporal_start:
            g.add((period, DCAT.startDate, RdfLiteral(d.temporal_start.isoformat(), datatype=XSD.date)))
        if d.temporal_end:
            g.add((period, DCAT.endDate, RdfLiteral(d.temporal_end.isoformat(), datatype=XSD.date)))
        g.add((node, DCTERMS.temporal, period))
    if d.issued:
        g.add((node, DCTERMS.issued, _datetime(d.issued)))
    if d.modified:
        g.add((node, DCTERMS.modified, _datetime(d.modified)))
    if d.frequency:
        g.add((node, DCTERMS.accrualPeriodicity, _eu("frequency", d.frequency)))
    if d.landing_page:
        g.add((node, DCAT.landingPage, URIRef(d.landing_page)))
    for i, dist in enumerate(d.distributions, start=1):
        g.add((node, DCAT.distribution, _distribution(g, node, i, dist)))
    return node


def _distribution(g: Graph, dataset: URIRef, index: int, dist: CatalogDistribution) -> URIRef:
    node = URIRef(f"{dataset}/distributions/{index}")
    g.add((node, RDF.type, DCAT.Distribution))
    g.add((node, DCTERMS.title, RdfLiteral(dist.title, lang="de")))
    if dist.description:
        g.add((node, DCTERMS.description, RdfLiteral(dist.description, lang="de")))
    g.add((node, DCAT.accessURL, URIRef(dist.access_url)))
    if dist.download_url:
        g.add((node, DCAT.downloadURL, URIRef(dist.download_url)))
    g.add((node, DCTERMS.format, _eu("file-type", dist.format)))
    g.add((node, DCAT.mediaType, _iana(dist.media_type)))
    g.add((node, DCTERMS.license, URIRef(dist.license)))
    if dist.attribution:
        g.add((node, DCATDE.licenseAttributionByText, RdfLiteral(dist.attribution, lang="de")))
    g.add((node, DCATAP.availability, URIRef(AVAILABLE)))
    g.add((node, DCTERMS.language, URIRef(LANGUAGE_DE)))
    return node


def build_graph(
    info: CatalogInfo, datasets: Sequence[CatalogDataset], page: Page, fmt: RdfFormat, default_page_size: int
) -> Graph:
    """The catalog with the datasets of one page and Hydra paging (as CKAN's DCAT harvester reads it)."""
    g = Graph()
    _bind(g)
    base = info.base_url
    cat = catalog_uri(base)
    g.add((cat, RDF.type, DCAT.Catalog))
    g.add((cat, DCTERMS.title, RdfLiteral(info.title, lang="de")))
    g.add((cat, DCTERMS.description, RdfLiteral(info.description, lang="de")))
    g.add((cat, DCTERMS.publisher, _agent(g, base, info.publisher)))
    g.add((cat, DCTERMS.language, URIRef(LANGUAGE_DE)))
    g.add((cat, DCTERMS.license, URIRef(LICENCE_DL_BY_DE_2)))
    g.add((cat, DCATAP.availability, URIRef(AVAILABLE)))
    g.add((cat, FOAF.homepage, URIRef(f"{base}/dashboard")))
    modified = [d.modified for d in datasets if d.modified]
    if modified:
        g.add((cat, DCTERMS.modified, _datetime(max(modified))))
    for d in page.slice(datasets):
        g.add((cat, DCAT.dataset, _dataset(g, info, d)))

    def url(n: int) -> RdfLiteral:
        return RdfLiteral(page_url(base, fmt, n, page.size, default_page_size))

    paging = URIRef(str(url(page.number)))
    g.add((paging, RDF.type, HYDRA.PagedCollection))
    g.add((paging, HYDRA.totalItems, RdfLiteral(page.total, datatype=XSD.integer)))
    g.add((paging, HYDRA.itemsPerPage, RdfLiteral(page.size, datatype=XSD.integer)))
    g.add((paging, HYDRA.firstPage, url(1)))
    g.add((paging, HYDRA.lastPage, url(page.last)))
    if page.number > 1:
        g.add((paging, HYDRA.previousPage, url(min(page.number - 1, page.last))))
    if page.number < page.last:
        g.add((paging, HYDRA.nextPage, url(page.number + 1)))
    return g


def build_dataset_graph(info: CatalogInfo, d: CatalogDataset) -> Graph:
    """One dataset with its distributions, what its IRI dereferences to."""
    g = Graph()
    _bind(g)
    node = _dataset(g, info, d)
    g.add((catalog_uri(info.base_url), DCAT.dataset, node))
    return g


def serialize(g: Graph, fmt: RdfFormat) -> bytes:
    if fmt == "json-ld":
        return g.serialize(format="json-ld", auto_compact=True, encoding="utf-8")
    return g.serialize(format=fmt, encoding="utf-8")


# --- the KPI datasets -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KpiFamily:
    key: str
    title: str
    description: str
    keywords: tuple[str, ...]


KPI_FAMILIES: Final[tuple[KpiFamily, ...]] = (
    KpiFamily(
        "usage", "Nutzung der Online-Dienste",
        "Seitenaufrufe und gestartete Vorgänge, auch nach Kanal (Web, App) und Geräteklasse, je "
        "Verwaltungsleistung (LeiKa) und Tag.",
        ("Nutzung", "Online-Dienste", "Seitenaufrufe", "Endgeräte"),
    ),
    KpiFamily(
        "funnel", "Abschlüsse und Abbrüche",
        "Gestartete, abgeschlossene und abgebrochene Vorgänge, Abschluss- und Abbruchquote, erledigte "
        "Formularschritte und Abbrüche nach dem zuletzt erledigten Schritt (Trichter) je Verwaltungsleistung und Tag.",
        ("Abschlussquote", "Abbruchquote", "Formular", "Trichter"),
    ),
    KpiFamily(
        "payment", "Zahlarten",
        "Abgeschlossene Zahlungen nach Zahlart (SEPA-Lastschrift, Kreditkarte, PayPal, Rechnung, giropay) je "
        "Verwaltungsleistung und Tag.",
        ("Zahlung", "ePayment", "Zahlart"),
    ),
    KpiFamily(
        "auth", "Authentifizierung",
        "Anmeldungen nach Verfahren (BundID Basis, ELSTER, Online-Ausweis, EU-ID) und Vertrauensniveau je "
        "Verwaltungsleistung und Tag.",
        ("Authentifizierung", "BundID", "Online-Ausweis", "Vertrauensniveau"),
    ),
    KpiFamily(
        "feedback", "Zufriedenheit",
        "Bewertungen der Online-Dienste (1 bis 5 Sterne): Anzahl, Mittelwert und Verteilung je "
        "Verwaltungsleistung und Tag. Freitextkommentare werden nicht veröffentlicht.",
        ("Zufriedenheit", "Bewertung", "Feedback"),
    ),
    KpiFamily(
        "duration", "Bearbeitungszeit im Formular",
        "Dauer vom Start bis zum Absenden eines Online-Antrags als Verteilung über feste Zeitklassen und "
        "Perzentile je Verwaltungsleistung und Tag.",
        ("Ausfülldauer", "Online-Antrag", "Dauer"),
    ),
    KpiFamily(
        "processing", "Bearbeitungsdauer in der Verwaltung",
        "Eröffnete und abgeschlossene Fälle, Bearbeitungsdauer (Verteilung und Perzentile) und "
        "Fristüberschreitungen der Fachverfahren je Verwaltungsleistung und Tag.",
        ("Bearbeitungsdauer", "Fristen", "Fachverfahren"),
    ),
)
RANGE_NOTE: Final = (
    "Tageswerte der letzten 30 Tage; andere Zeiträume und Zeiteinheiten über die Parameter from, to und period "
    "der Schnittstelle (Beschreibung unter /docs)."
)
COMMON_KEYWORDS: Final = ("Verwaltungsdigitalisierung", "Onlinezugangsgesetz", "OZG", "Statistik", "Hessen")


@dataclass(frozen=True, slots=True)
class Coverage:
    """What the KPI table holds for one municipality (or all, None) and one family."""

    first_day: date
    last_day: date
    modified: datetime


CoverageReader = Callable[[Conn], Awaitable[dict[tuple[str | None, str], Coverage]]]


def kpi_urls(base_url: str, family: str, ags: str | None) -> tuple[str, str]:
    """JSON and CSV URLs of the open-data API for one family, optionally one municipality."""
    params = {"municipality": ags, "family": family} if ags else {"family": family}
    query = urlencode(params)
    return f"{base_url}/v1/kpis.json?{query}", f"{base_url}/v1/kpis.csv?{query}"


def kpi_dataset(
    base_url: str, family: KpiFamily, m: Municipality | None, coverage: Coverage | None,
    hessen_publisher: CatalogAgent, contact_email: str | None, first_published: date | None = None,
) -> CatalogDataset:
    """One KPI dataset; `issued` is its first day of data, else the catalog's (`first_published`)."""
    where = m.name if m else "Hessen (alle teilnehmenden Kommunen)"
    json_url, csv_url = kpi_urls(base_url, family.key, m.ags if m else None)
    dashboard = f"{base_url}/dashboard/{m.ags}" if m else f"{base_url}/dashboard"
    attribution = f"{m.name if m else 'Kommunal-Pulse'}, Kommunal-Pulse Open Data, dl-de/by-2-0"
    suppression = f" {ckm.note_de()} (English: {ckm.note_en()})"
    start, end, issued = None, None, None
    if coverage:
        # The distributions serve the daily values of the RANGE_DAYS days up to the last one (days without events
        # count 0); the API reaches further back where the table holds older days.
        end = coverage.last_day
        start = min(coverage.first_day, end - timedelta(days=RANGE_DAYS))
    first = coverage.first_day if coverage else first_published
    if first is not None:
        issued = datetime.combine(first, time(0), BERLIN)
    return CatalogDataset(
        id=f"kpi-{family.key}-{m.ags if m else 'hessen'}",
        title=f"{family.title}: {where}",
        description=family.description + suppression,
        keywords=(*family.keywords, *COMMON_KEYWORDS, *((m.name,) if m else ())),
        themes=("GOVE",),
        publisher=CatalogAgent(id=m.ags, name=m.name) if m else hessen_publisher,
        contact_point=CatalogContact(
            name=f"Open-Data-Ansprechstelle {m.name if m else 'Kommunal-Pulse'}", url=dashboard, email=contact_email
        ),
        spatial_ags=m.ags if m else None,
        temporal_start=start,
        temporal_end=end,
        issued=issued,
        modified=coverage.modified if coverage else None,
        frequency="DAILY",
        landing_page=dashboard,
        distributions=(
            CatalogDistribution(
                title=f"{family.title}: {where} (JSON)", description=RANGE_NOTE, access_url=json_url,
                download_url=json_url,
                format="JSON", media_type="application/json", attribution=attribution,
            ),
            CatalogDistribution(
                title=f"{family.title}: {where} (CSV)", description=RANGE_NOTE, access_url=csv_url,
                download_url=csv_url,
                format="CSV", media_type="text/csv", attribution=attribution,
            ),
        ),
    )


def kpi_provider(
    read_coverage: CoverageReader, hessen_publisher: CatalogAgent, contact_email: str | None = None
) -> DatasetProvider:
    """Provider of one dataset per municipality x KPI family plus one Hessen-wide dataset per family."""

    async def provide(ctx: CatalogContext) -> Sequence[CatalogDataset]:
        coverage = await read_coverage(ctx.conn)
        first = min((c.first_day for c in coverage.values()), default=None)
        out: list[CatalogDataset] = []
        for family in KPI_FAMILIES:
            out.append(kpi_dataset(
                ctx.base_url, family, None, coverage.get((None, family.key)), hessen_publisher, contact_email, first
            ))
            for m in municipalities():
                out.append(kpi_dataset(
                    ctx.base_url, family, m, coverage.get((m.ags, family.key)), hessen_publisher, contact_email, first
                ))
        return out

    return provide


def coverage_by_family(rows: Sequence[tuple[str, str, date, date, datetime]]) -> dict[tuple[str | None, str], Coverage]:
    """Fold (municipality, metric, first day, last day, modified) rows into coverage per municipality x family
    and per family for all of Hessen (key None)."""
    family_of: dict[str, list[str]] = {}
    for d in DEFINITIONS:
        for fam in d.families:
            family_of.setdefault(d.metric, []).append(fam)
    out: dict[tuple[str | None, str], Coverage] = {}
    for ags, metric, first, last, modified in rows:
        for family in family_of.get(metric, ()):
            for key in ((ags.strip(), family), (None, family)):
                old = out.get(key)
                out[key] = Coverage(first, last, modified) if old is None else Coverage(
                    min(old.first_day, first), max(old.last_day, last), max(old.modified, modified)
                )
    return out


async def read_kpi_coverage(conn: Conn) -> dict[tuple[str | None, str], Coverage]:
    rows = await catalog_repository.kpi_coverage(conn)
    return coverage_by_family(
        [(r["municipality"], r["metric"], r["first_day"], r["last_day"], r["modified"]) for r in rows]
    )


def cached(read: CoverageReader, ttl_s: float, clock: Callable[[], float] = clock_time.monotonic) -> CoverageReader:
    """Reuse the coverage for `ttl_s` seconds: it scans the daily KPI rows, and harvesters need no fresher."""
    state: dict[str, Any] = {}

    async def read_cached(conn: Conn) -> dict[tuple[str | None, str], Coverage]:
        now = clock()
        if "value" not in state or now - state["at"] >= ttl_s:
            state["value"], state["at"] = await read(conn), now
        value: dict[tuple[str | None, str], Coverage] = state["value"]
        return value

    return read_cached


def create_registry(
    hessen_publisher: CatalogAgent, contact_email: str | None = None, coverage_ttl_s: float = 60.0
) -> CatalogRegistry:
    """The publisher's registry with the KPI datasets; other providers are registered on top."""
    registry = CatalogRegistry()
    reader = cached(read_kpi_coverage, coverage_ttl_s) if coverage_ttl_s > 0 else read_kpi_coverage
    registry.register("kpi", kpi_provider(reader, hessen_publisher, contact_email))
    return registry
