"""Publisher settings (environment, prefix `KP_`)."""

from __future__ import annotations

from pydantic import Field, model_validator

from shared.settings import KPSettings


class PublisherSettings(KPSettings):
    port: int = 8003
    max_page_size: int = Field(10_000, ge=1)
    default_page_size: int = Field(1_000, ge=1)
    cache_max_age_s: int = Field(60, ge=0, description="Cache-Control max-age of open-data responses")
    change_poll_s: float = Field(30.0, gt=0, description="fallback poll of the KPI change time")
    etag_cache_size: int = Field(20_000, ge=0, description="remembered ETags answered with 304 without a query")
    table_cache_size: int = Field(64, ge=0, description="perturbed query results kept for the data version")
    max_hour_range_days: int = Field(31, ge=1)
    max_query_values: int = Field(200_000, ge=1, description="stored values one KPI query may read")
    max_day_range_days: int = Field(732, ge=1)
    gzip_min_bytes: int = Field(1_024, ge=0)
    # DCAT-AP.de catalog and dashboard (docs/catalog.md, docs/dashboard.md)
    public_base_url: str = Field("http://127.0.0.1:8003", description="public base URL; all catalog IRIs use it; "
                                 "defaults to http://KP_HOST:KP_PORT")
    catalog_title: str = "Kommunal-Pulse: Offene Daten zur Nutzung kommunaler Online-Dienste in Hessen"
    catalog_description: str = (
        "Kennzahlen zur Nutzung der Online-Dienste (OZG) der teilnehmenden hessischen Kommunen: Nutzung, "
        "Abbrüche, Zahl- und Anmeldeverfahren, Zufriedenheit und Bearbeitungsdauer."
    )
    catalog_publisher_name: str = "Kommunal-Pulse"
    catalog_contact_email: str | None = None
    catalog_contributor_id: str | None = None
    catalog_page_size: int = Field(100, ge=1, le=1000)
    catalog_coverage_ttl_s: float = Field(60.0, ge=0, description="reuse of the catalog's KPI coverage scan; 0 = off")
    # data portal (registered datasets)
    portal_max_upload_bytes: int = 20 * 1024 * 1024

    @model_validator(mode="after")
    def _base_url_from_listen_address(self) -> PublisherSettings:
        # Unset, the published links (catalog IRIs, CKAN help URLs, downloads) name the address actually served.
        if "public_base_url" not in self.model_fields_set:
            host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
            host = f"[{host}]" if ":" in host else host
            self.public_base_url = f"http://{host}:{self.port}"
        return self
