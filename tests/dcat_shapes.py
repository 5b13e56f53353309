"""GovData's DCAT-AP.de 3.0 shapes, read from `../shared/validators/dcat-ap-de` beside the checkout.

Applied like that folder's `validate.py --strict`: warnings count as failures. Tests skip with a visible reason
when the folder is absent; the files are never copied into the project.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
from pyshacl import validate
from rdflib import Graph

REPO_ROOT = Path(__file__).resolve().parent.parent
SHAPES_DIR = REPO_ROOT.parent / "shared" / "validators" / "dcat-ap-de"
# The same files, in the same roles, as the folder's validate.py.
SHAPES = (
    "dcat-ap-SHACL-3.0.0-semic.ttl", "dcat-ap-SHACL-DE.ttl", "dcat-ap-spec-german-additions.ttl",
    "dcat-ap-de-deprecated.ttl",
)
ONTOLOGIES = (
    "foaf_0_1.rdf", "vcard.ttl", "org.ttl", "dcat-ap-de-licenses-open.rdf", "dcat-ap-de-contributors.rdf",
)


@cache
def _load() -> tuple[Graph, Graph]:
    shapes, ontologies = Graph(), Graph()
    for f in SHAPES:
        shapes.parse(SHAPES_DIR / f)
    for f in ONTOLOGIES:
        ontologies.parse(SHAPES_DIR / f)
    return shapes, ontologies


def load_shapes() -> tuple[Graph, Graph]:
    """Shapes and ontology graphs; skips the calling test when the validator folder is missing."""
    missing = [f for f in (*SHAPES, *ONTOLOGIES) if not (SHAPES_DIR / f).is_file()]
    if missing:
        pytest.skip(f"GovData DCAT-AP.de shapes not found at {SHAPES_DIR} (missing {', '.join(missing)})")
    return _load()


def shacl_report(data: Graph, shapes: Graph, ontologies: Graph) -> tuple[bool, str]:
    conforms, _, text = validate(
        data, shacl_graph=shapes, ont_graph=ontologies, inference="none", allow_warnings=False
    )
    return bool(conforms), str(text)


def assert_conforms(data: Graph) -> None:
    """Zero violations and zero warnings."""
    shapes, ontologies = load_shapes()
    conforms, text = shacl_report(data, shapes, ontologies)
    assert conforms, text
