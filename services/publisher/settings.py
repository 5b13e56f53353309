"""Publisher settings (environment, prefix `KP_`)."""

from __future__ import annotations

from shared.settings import KPSettings


class PublisherSettings(KPSettings):
    port: int = 8003
    max_page_size: int = 10_000
    # DCAT-AP.de catalog and dashboard
    public_base_url: str = "http://127.0.0.1:8003"
    catalog_title: str = "Kommunal-Pulse: Offene Daten zur Nutzung kommunaler Online-Dienste in Hessen"
    catalog_description: str = (
        "Kennzahlen zur Nutzung der Online-Dienste (OZG) der teilnehmenden hessischen Kommunen: Nutzung, "
        "Abbrüche, Zahl- und Anmeldeverfahren, Zufriedenheit und Bearbeitungsdauer."
    )
    catalog_publisher_name: str = "Kommunal-Pulse"
    catalog_contact_email: str | None = None
    catalog_contributor_id: str | None = None
    catalog_page_size: int = 100
    # data portal (registered datasets)
    portal_max_upload_bytes: int = 20 * 1024 * 1024
