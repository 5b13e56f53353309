"""API models of the open-data API (they document the responses; bodies are serialised with orjson)."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field


class KpiQueryOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    municipality: list[str] = Field(description="AGS filter; empty = all")
    service: list[str] = Field(description="LeiKa filter; empty = all")
    period: str = Field(description="hour | day | month")
    from_: date = Field(alias="from", description="first day (Europe/Berlin)")
    to: date = Field(description="last day (Europe/Berlin), inclusive")
    family: list[str]


class Perturbation(BaseModel):
    """How the published counts are protected (Cell Key Method, docs/privacy.md)."""

    method: str = Field(examples=["cell_key_method"])
    max_deviation: int = Field(description="no published count differs from the true one by more", examples=[3])
    variance: float = Field(description="variance of the deviation", examples=[2.0])
    smallest_published: int = Field(description="smallest count published other than 0", examples=[1])
    table: str = Field(description="version of the perturbation table")
    note_de: str
    note_en: str


class KpiItem(BaseModel):
    period: str = Field(examples=["day"])
    period_start: str = Field(description="start of the period, Europe/Berlin, ISO 8601 with offset",
                              examples=["2026-03-01T00:00:00+01:00"])
    municipality: str = Field(examples=["06413000"])
    service: str = Field(examples=["99115005104000"])
    metric: str = Field(examples=["sessions_started"])
    dimension: str = Field(description="split of the metric; empty if none", examples=[""])
    value: float | None = Field(description="perturbed count, or a rate, mean or percentile of perturbed counts",
                                examples=[42])
    suppressed: bool = Field(description="always false: no value is withheld (kept for compatibility)",
                             examples=[False])


class KpiPage(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "query": {"municipality": ["06413000"], "service": ["99115005104000"], "period": "day",
                  "from": "2026-03-01", "to": "2026-03-01", "family": ["funnel"]},
        "perturbation": {"method": "cell_key_method", "max_deviation": 3, "variance": 2.0, "smallest_published": 1,
                         "table": "ckm-d3-v2-js1", "note_de": "...", "note_en": "..."},
        "total_items": 2, "offset": 0, "limit": 1000, "next": None,
        "items": [
            {"period": "day", "period_start": "2026-03-01T00:00:00+01:00", "municipality": "06413000",
             "service": "99115005104000", "metric": "sessions_started", "dimension": "", "value": 42,
             "suppressed": False},
            {"period": "day", "period_start": "2026-03-01T00:00:00+01:00", "municipality": "06413000",
             "service": "99115005104000", "metric": "sessions_abandoned", "dimension": "", "value": 3,
             "suppressed": False},
        ],
    }]})

    query: KpiQueryOut
    perturbation: Perturbation
    total_items: int
    offset: int
    limit: int
    next: str | None = Field(description="URL of the next page, null on the last")
    items: list[KpiItem]


class TotalItem(BaseModel):
    municipality: str
    service: str
    metric: str
    dimension: str
    value: float | None
    suppressed: bool


class TotalsPage(BaseModel):
    query: KpiQueryOut
    perturbation: Perturbation
    total_items: int
    offset: int
    limit: int
    next: str | None
    items: list[TotalItem]


class SizeClassOut(BaseModel):
    id: str
    label_de: str
    min_population: int
    max_population: int | None


class MunicipalityOut(BaseModel):
    ags: str = Field(examples=["06413000"])
    ars: str = Field(examples=["064130000000"])
    name: str = Field(examples=["Offenbach am Main"])
    kreis: str
    population: int
    population_date: date
    political_geocoding_uri: str = Field(
        examples=["http://dcat-ap.de/def/politicalGeocoding/municipalityKey/06413000"])
    size_class: SizeClassOut


class ServiceOut(BaseModel):
    leika_key: str = Field(examples=["99115005104000"])
    name_de: str = Field(examples=["Wohnsitz Anmeldung"])
    ozg_leistung: str | None = Field(examples=["Wohnsitzmeldungen"])
    typ: str | None = Field(description="OZG Typisierung", examples=["2/3"])


class KpiDefinitionOut(BaseModel):
    metric: str
    families: list[str]
    kind: str = Field(description="count | rate | mean | percentile")
    unit: str
    dimension: str = Field(description="what the dimension holds; empty if the metric has none")
    label_de: str
    label_en: str
    description_de: str
    description_en: str
    formula: str


class MunicipalityList(BaseModel):
    items: list[MunicipalityOut]


class ServiceList(BaseModel):
    items: list[ServiceOut]


class KpiDefinitionList(BaseModel):
    items: list[KpiDefinitionOut]


class ComparisonItem(BaseModel):
    service: str
    metric: str
    value: float | None
    suppressed: bool
    hessen: float | None = Field(description="the six member cities taken together")
    hessen_suppressed: bool
    size_class: float | None = Field(description="the member cities of the same size class taken together")
    size_class_suppressed: bool


class Comparison(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    municipality: MunicipalityOut
    size_class_members: list[str]
    hessen_members: list[str]
    period: str
    from_: date = Field(alias="from")
    to: date
    perturbation: Perturbation
    items: list[ComparisonItem]


class InvalidParam(BaseModel):
    name: str
    reason: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(examples=["about:blank"])
    title: str = Field(examples=["Invalid request parameter"])
    status: int = Field(examples=[422])
    detail: str | None = None
    instance: str | None = None
    invalid_params: list[InvalidParam] | None = Field(None, alias="invalid-params")
