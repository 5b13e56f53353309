"""Parse a DCAT catalog with ckanext-dcat's `RDFParser` as a CKAN harvester does; print the datasets as JSON.

Runs in the harvester environment (`.venv-ckan`, CKAN and ckanext-dcat, see `requirements.txt` beside this
file), not in the project's. Usage: `python dcat_parse.py URL FORMAT` (turtle, xml, json-ld); follows the
catalog's Hydra pages like ckanext-dcat's DCAT RDF harvester and prints
`{"pages": [...], "datasets": [...]}` on stdout.
"""

from __future__ import annotations

import json
import sys
import urllib.request

from ckan.common import config

config["ckan.site_url"] = "http://harvester.invalid"  # the parser needs a site URL, nothing else of CKAN

from ckanext.dcat.processors import RDFParser  # noqa: E402

MEDIA = {"turtle": "text/turtle", "xml": "application/rdf+xml", "json-ld": "application/ld+json"}


def main(url: str, fmt: str) -> None:
    pages: list[str] = []
    datasets: list[dict[str, object]] = []
    next_url: str | None = url
    while next_url and next_url not in pages and len(pages) < 100:
        pages.append(next_url)
        request = urllib.request.Request(next_url, headers={"Accept": MEDIA[fmt]})
        with urllib.request.urlopen(request, timeout=60) as response:
            body = response.read().decode("utf-8")
        parser = RDFParser(profiles=["euro_dcat_ap_3"])
        parser.parse(body, _format=fmt)
        datasets.extend(parser.datasets())
        next_url = parser.next_page()
    json.dump({"pages": pages, "datasets": datasets}, sys.stdout, default=str)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
