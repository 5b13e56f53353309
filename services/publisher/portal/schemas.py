"""API models of the data portal: what a data officer writes and what the portal returns."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from services.publisher.portal import vocab
from shared.events.text import Text as Bounded
from shared.iri import http_iri, is_iri
from shared.reference import municipality_by_ags

HTTP_URL = r"^https?://[^\s/$.?#][^\s]*$"
EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
MEDIA_TYPE = r"^[a-z]+/[a-zA-Z0-9.+-]+$"


def _in(allowed: dict[str, Any], what: str) -> Any:
    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"not an allowed {what}; use one of: {', '.join(sorted(allowed))}")
        return value

    return check


def _known_ags(value: str) -> str:
    if value not in municipality_by_ags():
        raise ValueError(f"unknown municipality key (AGS); known: {', '.join(sorted(municipality_by_ags()))}")
    return value


def _mailto(value: str) -> str:
    if not is_iri(f"mailto:{value}"):
        raise ValueError("not an e-mail address that can be written as a mailto: IRI")
    return value


# Every text follows the contracts' string rule (no control characters, bounded in characters and bytes); every
# URL is an absolute http(s) IRI by the grammar of RFC 3987, checked when it is registered.
Text = Annotated[str, Bounded(300, min_chars=1, strip=True, strict=False)]
Url = Annotated[str, Bounded(2000, strip=True, strict=False, pattern=HTTP_URL), AfterValidator(http_iri)]
LicenceIri = Annotated[str, AfterValidator(_in(vocab.LICENCES, "dcat-ap.de licence IRI"))]
ThemeIri = Annotated[str, AfterValidator(_in(vocab.THEMES, "EU data-theme IRI"))]
FrequencyIri = Annotated[str, AfterValidator(_in(vocab.FREQUENCIES, "EU frequency IRI"))]
FormatName = Annotated[str, AfterValidator(_in(vocab.FORMATS, "EU file-type name"))]
Ags = Annotated[str, StringConstraints(pattern=r"^\d{8}$"), AfterValidator(_known_ags)]
Keyword = Annotated[str, Bounded(100, min_chars=2, strip=True, strict=False)]


def _no_nul(value: Any) -> Any:
    texts = value if isinstance(value, list) else [value]
    if any(isinstance(t, str) and "\x00" in t for t in texts):
        raise ValueError("must not contain NUL characters")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # PostgreSQL text cannot hold NUL; refuse it here, naming the field, instead of failing on write.
    _nul = field_validator("*", mode="before")(_no_nul)


class Agent(Strict):
    """Publisher (dcterms:publisher, a foaf:Agent)."""

    name: Text
    url: Url | None = None


class ContactPoint(Strict):
    """Contact point (dcat:contactPoint, a vcard:Organization); needs an e-mail address or a web form."""

    name: Text
    email: Annotated[str, Bounded(254, strip=True, strict=False, pattern=EMAIL), AfterValidator(_mailto)] | None = None
    url: Url | None = None

    @model_validator(mode="after")
    def _reachable(self) -> ContactPoint:
        if self.email is None and self.url is None:
            raise ValueError("a contact point needs an email or a url")
        return self


class Temporal(Strict):
    """Temporal coverage (dcterms:temporal, a dcterms:PeriodOfTime)."""

    start: date
    end: date | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Temporal:
        if self.end is not None and self.end < self.start:
            raise ValueError("end lies before start")
        return self


class DistributionIn(Strict):
    """A distribution reached through a link (files hosted by the portal are uploaded separately)."""

    title: Text | None = None
    description: Annotated[str, Bounded(2000, strip=True, strict=False, multiline=True)] | None = None
    access_url: Url
    download_url: Url | None = None
    format: FormatName
    media_type: Annotated[str, StringConstraints(pattern=MEDIA_TYPE)] | None = None
    licence: LicenceIri | None = None

    @model_validator(mode="after")
    def _media_type_fits_format(self) -> DistributionIn:
        known = vocab.FORMATS[self.format].media_types if self.format in vocab.FORMATS else ()
        if self.media_type is None:
            self.media_type = known[0] if known else None
        elif known and self.media_type not in known:
            raise ValueError(f"media_type {self.media_type} does not fit format {self.format}; use {', '.join(known)}")
        return self


class DatasetIn(Strict):
    """A dataset as a data officer describes it (DCAT-AP.de 3.0 fields, German texts)."""

    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{1,99}$")] = Field(
        description="URL name, unique in the portal (lower case letters, digits, - and _)",
        examples=["parkplaetze-innenstadt"],
    )
    municipality: Ags = Field(description="AGS of the publishing municipality", examples=["06413000"])
    title: Annotated[str, Bounded(300, min_chars=3, strip=True, strict=False)] = Field(
        description="Title in German", examples=["Parkplätze in der Innenstadt"])
    description: Annotated[str, Bounded(20_000, min_chars=10, strip=True, strict=False, multiline=True)] = Field(
        description="Description in German")
    keywords: Annotated[list[Keyword], Field(min_length=1, max_length=50)]
    themes: Annotated[list[ThemeIri], Field(min_length=1, max_length=13)]
    licence: LicenceIri
    publisher: Agent | None = Field(default=None, description="Defaults to the municipality")
    contact_point: ContactPoint
    temporal: Temporal | None = None
    frequency: FrequencyIri
    landing_page: Url | None = None
    distributions: Annotated[list[DistributionIn], Field(max_length=50)] = []

    @field_validator("themes", "keywords")
    @classmethod
    def _unique(cls, values: list[str]) -> list[str]:
        if len(set(values)) != len(values):
            raise ValueError("contains duplicates")
        return values


class AgentOut(BaseModel):
    """A publisher as stored (read models do not re-validate: rules may tighten after a row was written)."""

    name: str
    url: str | None = None


class ContactPointOut(BaseModel):
    name: str
    email: str | None = None
    url: str | None = None


class HostedFile(BaseModel):
    id: str
    filename: str
    byte_size: int
    sha256: str


class Distribution(BaseModel):
    """A distribution as published: linked (access_url given) or hosted (file given)."""

    id: str
    title: str | None = None
    description: str | None = None
    access_url: str
    download_url: str | None = None
    format: str
    media_type: str | None = None
    licence: str
    file: HostedFile | None = None


class Dataset(BaseModel):
    """A registered dataset as the portal publishes it."""

    id: str
    name: str
    municipality: str
    status: Literal["published", "withdrawn"]
    version: int
    title: str
    description: str
    keywords: list[str]
    themes: list[str]
    licence: str
    publisher: AgentOut
    contact_point: ContactPointOut
    spatial: str = Field(description="Political-geocoding URI of the municipality")
    temporal: Temporal | None = None
    frequency: str
    landing_page: str | None = None
    distributions: list[Distribution]
    created: datetime
    modified: datetime


class DatasetVersion(BaseModel):
    version: int
    status: str
    action: str
    changed_by: str
    changed_at: datetime
    document: dict[str, Any]


class History(BaseModel):
    name: str
    versions: list[DatasetVersion]


class FacetItem(BaseModel):
    value: str
    label: str
    count: int


class SearchResult(BaseModel):
    count: int
    page: int
    size: int
    results: list[Dataset]
    facets: dict[str, list[FacetItem]]


class UploadResult(BaseModel):
    dataset: Dataset
    distribution: Distribution
    report: dict[str, Any] | None = Field(description="Frictionless validation report (CSV only)")
