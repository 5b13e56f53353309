"""Registered datasets as descriptors for the publisher's DCAT-AP.de catalog (see docs/catalog.md)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

from pydantic import ValidationError

from services.publisher.catalog import service as catalog
from services.publisher.portal import repository, service, vocab
from services.publisher.portal.schemas import Dataset
from shared.reference import municipality_by_ags

log = logging.getLogger(__name__)
PROVIDER_NAME = "portal"
_BATCH = 1000


def descriptor(d: Dataset, base_url: str) -> catalog.CatalogDataset:
    """One published dataset as a catalog descriptor (hosted files carry their download URL)."""
    m = municipality_by_ags()[d.municipality]
    # The municipality itself keeps the agent IRI the KPI datasets use; other publishers get their own.
    agent_id = m.ags
    if d.publisher.name != m.name:
        agent_id += "-" + hashlib.sha256(d.publisher.name.encode()).hexdigest()[:10]
    return catalog.CatalogDataset(
        id=d.name,
        title=d.title,
        description=d.description,
        keywords=tuple(d.keywords),
        themes=tuple(d.themes),
        publisher=catalog.CatalogAgent(id=agent_id, name=d.publisher.name),
        contact_point=catalog.CatalogContact(name=d.contact_point.name, email=d.contact_point.email,
                                             url=d.contact_point.url),
        spatial_ags=d.municipality,
        temporal_start=d.temporal.start if d.temporal else None,
        temporal_end=d.temporal.end if d.temporal else None,
        issued=d.created,
        modified=d.modified,
        frequency=d.frequency,
        landing_page=d.landing_page or f"{base_url}/portal/datensaetze/{d.name}",
        distributions=tuple(
            catalog.CatalogDistribution(
                title=r.title or f"{d.title} ({vocab.format_label(r.format)})",
                description=r.description or None,
                access_url=r.access_url,
                download_url=r.download_url,
                format=r.format,
                media_type=r.media_type or vocab.FORMATS[r.format].media_types[0],
                license=r.licence,
            )
            for r in d.distributions
        ),
    )


async def provide(ctx: catalog.CatalogContext) -> Sequence[catalog.CatalogDataset]:
    """Every published dataset that has at least one distribution (DCAT-AP.de needs one to be harvestable)."""
    out: list[catalog.CatalogDataset] = []
    offset = 0
    while True:
        rows = await repository.published(ctx.conn, _BATCH, offset)
        for r in rows:
            try:
                d = service.to_dataset(r, ctx.base_url)
                if d.distributions:
                    out.append(descriptor(d, ctx.base_url))
            except (ValidationError, KeyError, ValueError) as exc:
                # A row stored before a rule tightened (or written around the API) must not take the whole
                # catalog down: it is left out, and said so, until it is corrected or withdrawn.
                log.warning("dataset left out of the catalog: %s", r["name"],
                            extra={"dataset": r["name"], "error": str(exc)[:500]})
        if len(rows) < _BATCH:
            return out
        offset += _BATCH


def register(registry: catalog.CatalogRegistry) -> None:
    registry.register(PROVIDER_NAME, provide)
