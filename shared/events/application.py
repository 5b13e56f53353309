"""Application events v1: what portals and Fachverfahren report about applications (Anträge)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, TypeAdapter

from shared.events.base import Contract, Envelope

ApplicationId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{4,80}$", strict=True)]
DocumentType = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{2,40}$", strict=True)]
Cents = Annotated[int, Field(ge=0, le=100_000_000, strict=True)]


class ApplicationEventBase(Envelope):
    """Envelope of application events: adds the application id used for correlation."""

    application_id: ApplicationId


class ApplicationSubmittedData(Contract):
    channel: Literal["online", "fit_connect", "paper", "email", "other"]
    documents: Annotated[list[DocumentType], Field(max_length=50, default_factory=list)]
    fee_cents: Cents | None = None


class ApplicationSubmitted(ApplicationEventBase):
    """An application arrived at the authority (Antrag eingegangen)."""

    type: Literal["application.submitted"]
    data: ApplicationSubmittedData


class DocumentsAddedData(Contract):
    documents: Annotated[list[DocumentType], Field(min_length=1, max_length=50)]


class DocumentsAdded(ApplicationEventBase):
    """The applicant supplied further documents (Unterlagen nachgereicht)."""

    type: Literal["application.documents.added"]
    data: DocumentsAddedData


class PaymentReceivedData(Contract):
    amount_cents: Cents
    method: Literal["epaybl", "sepa_lastschrift", "kreditkarte", "paypal", "rechnung", "giropay", "other"]


class PaymentReceived(ApplicationEventBase):
    """The fee was paid (Zahlung eingegangen)."""

    type: Literal["application.payment.received"]
    data: PaymentReceivedData


class WithdrawnData(Contract):
    pass


class ApplicationWithdrawn(ApplicationEventBase):
    """The applicant withdrew the application."""

    type: Literal["application.withdrawn"]
    data: WithdrawnData = WithdrawnData()


class DecidedData(Contract):
    outcome: Literal["approved", "rejected", "partially_approved"]


class ApplicationDecided(ApplicationEventBase):
    """The authority decided on the application (Bescheid)."""

    type: Literal["application.decided"]
    data: DecidedData


ApplicationEvent = Annotated[
    ApplicationSubmitted | DocumentsAdded | PaymentReceived | ApplicationWithdrawn | ApplicationDecided,
    Field(discriminator="type"),
]
application_event_adapter: TypeAdapter[ApplicationEvent] = TypeAdapter(ApplicationEvent)
