"""Controlled vocabularies a registered dataset may use (DCAT-AP.de 3.0 and the EU authority tables)."""

from __future__ import annotations

from dataclasses import dataclass

LICENCE_BASE = "http://dcat-ap.de/def/licenses/"
THEME_BASE = "http://publications.europa.eu/resource/authority/data-theme/"
FREQUENCY_BASE = "http://publications.europa.eu/resource/authority/frequency/"
FILE_TYPE_BASE = "http://publications.europa.eu/resource/authority/file-type/"

# Open licences of the dcat-ap.de licence vocabulary (http://dcat-ap.de/def/licenses), German labels.
LICENCES: dict[str, str] = {
    LICENCE_BASE + "dl-by-de/2.0": "Datenlizenz Deutschland Namensnennung 2.0",
    LICENCE_BASE + "dl-zero-de/2.0": "Datenlizenz Deutschland Zero 2.0",
    LICENCE_BASE + "cc-by/4.0": "Creative Commons Namensnennung 4.0 International (CC BY 4.0)",
    LICENCE_BASE + "cc-by-sa/4.0": "Creative Commons Namensnennung - Weitergabe unter gleichen Bedingungen 4.0",
    LICENCE_BASE + "cc-zero": "Creative Commons Zero (CC0 1.0)",
    LICENCE_BASE + "ccpdm/1.0": "Public Domain Mark 1.0",
    LICENCE_BASE + "odbl": "Open Data Commons Open Database License (ODbL)",
    LICENCE_BASE + "odby": "Open Data Commons Attribution License (ODC-BY)",
    LICENCE_BASE + "odcpddl": "Open Data Commons Public Domain Dedication and Licence (PDDL)",
    LICENCE_BASE + "officialWork": "Amtliches Werk, lizenzfrei nach § 5 UrhG",
}

# EU data themes (http://publications.europa.eu/resource/authority/data-theme), German labels.
THEMES: dict[str, str] = {
    THEME_BASE + code: label
    for code, label in {
        "AGRI": "Landwirtschaft, Fischerei, Forstwirtschaft und Nahrungsmittel",
        "ECON": "Wirtschaft und Finanzen",
        "EDUC": "Bildung, Kultur und Sport",
        "ENER": "Energie",
        "ENVI": "Umwelt",
        "GOVE": "Regierung und öffentlicher Sektor",
        "HEAL": "Gesundheit",
        "INTR": "Internationale Themen",
        "JUST": "Justiz, Rechtssystem und öffentliche Sicherheit",
        "REGI": "Regionen und Städte",
        "SOCI": "Bevölkerung und Gesellschaft",
        "TECH": "Wissenschaft und Technologie",
        "TRAN": "Verkehr",
    }.items()
}

# EU frequencies (http://publications.europa.eu/resource/authority/frequency), German labels.
FREQUENCIES: dict[str, str] = {
    FREQUENCY_BASE + code: label
    for code, label in {
        "UPDATE_CONT": "laufend aktualisiert",
        "HOURLY": "stündlich",
        "DAILY": "täglich",
        "WEEKLY": "wöchentlich",
        "MONTHLY": "monatlich",
        "QUARTERLY": "vierteljährlich",
        "ANNUAL_2": "halbjährlich",
        "ANNUAL": "jährlich",
        "BIENNIAL": "alle zwei Jahre",
        "IRREG": "unregelmäßig",
        "NEVER": "keine Aktualisierung",
        "UNKNOWN": "unbekannt",
    }.items()
}


@dataclass(frozen=True, slots=True)
class Format:
    """A distribution format: short name, EU file-type IRI, usual media types."""

    name: str
    media_types: tuple[str, ...]

    @property
    def iri(self) -> str:
        return FILE_TYPE_BASE + self.name


# EU file types (http://publications.europa.eu/resource/authority/file-type) with their IANA media types.
FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("CSV", ("text/csv",)),
        Format("JSON", ("application/json",)),
        Format("GEOJSON", ("application/geo+json", "application/vnd.geo+json")),
        Format("XML", ("application/xml", "text/xml")),
        Format("PDF", ("application/pdf",)),
        Format("XLSX", ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",)),
        Format("ODS", ("application/vnd.oasis.opendocument.spreadsheet",)),
        Format("ZIP", ("application/zip",)),
        Format("HTML", ("text/html",)),
        Format("SHP", ("application/x-shapefile", "application/zip")),
        Format("WMS_SRVC", ("application/vnd.ogc.wms_xml", "text/xml")),
        Format("RDF_TURTLE", ("text/turtle",)),
        Format("TXT", ("text/plain",)),
    )
}

# File name suffix of an upload → format.
UPLOAD_SUFFIXES: dict[str, str] = {".csv": "CSV", ".json": "JSON", ".geojson": "GEOJSON"}

# German names of the formats where the short name is not what people say.
FORMAT_LABELS: dict[str, str] = {"GEOJSON": "GeoJSON", "RDF_TURTLE": "Turtle", "WMS_SRVC": "WMS"}


def format_label(name: str) -> str:
    return FORMAT_LABELS.get(name, name)
