"""Usage events: what online-service platforms report about citizens' use of a service.

All types are at schema version 1 except `usage.page.viewed` (version 2; `shared.events.upcast` brings v1 up).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from shared.events.base import Contract, Envelope, Pseudonym, ShortText
from shared.events.text import Text

Device = Literal["desktop", "mobile", "tablet", "other"]
PagePath = Annotated[str, Text(200, pattern=r"^/[^?#\s]*$")]
"""A path without query or fragment: at most 200 characters and 400 UTF-8 bytes, no control characters."""


class UsageEventBase(Envelope):
    """Envelope of usage events: adds the session pseudonym."""

    session: Pseudonym


Referrer = Literal["search", "social", "internal", "municipal", "portal", "direct", "other"]
"""Referrer class of a page view (v2): a search engine, a social network, the service's own site, another
public-administration site, `portal` (one of the two, not told apart: all v1 data and platforms that cannot
tell), none, anything else."""


class PageViewedData(Contract):
    page: PagePath
    device: Device
    referrer: Referrer


class PageViewed(UsageEventBase):
    """A page of an online service was viewed (schema version 2)."""

    schema_version: Annotated[int, Field(ge=2, le=2, strict=True)]
    type: Literal["usage.page.viewed"]
    data: PageViewedData


class PageViewedDataV1(Contract):
    page: PagePath
    device: Device
    referrer: Literal["search", "portal", "direct", "other"]


class PageViewedV1(UsageEventBase):
    """A page of an online service was viewed (schema version 1, published; accepted and upcast to version 2)."""

    type: Literal["usage.page.viewed"]
    data: PageViewedDataV1


class SessionStartedData(Contract):
    channel: Literal["web", "app"]
    device: Device


class SessionStarted(UsageEventBase):
    """A citizen opened the online form of a service."""

    type: Literal["usage.session.started"]
    data: SessionStartedData


class StepCompletedData(Contract):
    step: Annotated[int, Field(ge=1, le=100, strict=True)]
    step_name: ShortText


class StepCompleted(UsageEventBase):
    """A form step was completed."""

    type: Literal["usage.step.completed"]
    data: StepCompletedData


AuthMethod = Literal["bundid_basis", "elster", "eid", "eu_id", "other"]
TrustLevel = Literal["niedrig", "substantiell", "hoch"]


class AuthCompletedData(Contract):
    method: AuthMethod
    level: TrustLevel


class AuthCompleted(UsageEventBase):
    """The citizen authenticated (BundID, ELSTER certificate, Online-Ausweis, EU-ID)."""

    type: Literal["usage.auth.completed"]
    data: AuthCompletedData


PaymentMethod = Literal[
    "epaybl", "sepa_lastschrift", "kreditkarte", "paypal", "rechnung", "giropay", "other"
]


class PaymentCompletedData(Contract):
    method: PaymentMethod
    amount_cents: Annotated[int, Field(ge=0, le=10_000_000, strict=True)]


class PaymentCompleted(UsageEventBase):
    """A fee was paid online."""

    type: Literal["usage.payment.completed"]
    data: PaymentCompletedData


class SessionSubmittedData(Contract):
    duration_s: Annotated[int, Field(ge=0, le=30 * 86400, strict=True)]


class SessionSubmitted(UsageEventBase):
    """The application was submitted (Abschluss)."""

    type: Literal["usage.session.submitted"]
    data: SessionSubmittedData


class SessionAbandonedData(Contract):
    last_step: Annotated[int, Field(ge=0, le=100, strict=True)]


class SessionAbandoned(UsageEventBase):
    """The session ended without submission (Nutzungsabbruch) after `last_step` completed steps."""

    type: Literal["usage.session.abandoned"]
    data: SessionAbandonedData


class FeedbackGivenData(Contract):
    stars: Annotated[int, Field(ge=1, le=5, strict=True)]
    comment: Annotated[str, Text(500, max_bytes=1000, multiline=True)] | None = None
    """Free text; TAB, LF and CR are allowed, other control characters are not."""


class FeedbackGiven(UsageEventBase):
    """The citizen rated the service; comments are scrubbed and never published."""

    type: Literal["usage.feedback.given"]
    data: FeedbackGivenData


UsageEvent = Annotated[
    PageViewed | SessionStarted | StepCompleted | AuthCompleted | PaymentCompleted | SessionSubmitted
    | SessionAbandoned | FeedbackGiven,
    Field(discriminator="type"),
]
usage_event_adapter: TypeAdapter[UsageEvent] = TypeAdapter(UsageEvent)

USAGE_EVENT_TYPES: tuple[str, ...] = (
    "usage.page.viewed", "usage.session.started", "usage.step.completed", "usage.auth.completed",
    "usage.payment.completed", "usage.session.submitted", "usage.session.abandoned", "usage.feedback.given",
)
