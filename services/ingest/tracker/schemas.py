"""Wire format of `POST /v1/collect`: what the tracker and the feedback widget send (one hit per user action).

The client keeps no state, so a hit carries no event id and no time: both are made by ingest when it arrives.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Width = Annotated[int, Field(ge=0, le=100_000, strict=True)]
PageLoad = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{8,64}$", strict=True)]
"""A random id the script draws once per page load and keeps in memory only (no cookie, no storage)."""
RawPath = Annotated[str, StringConstraints(min_length=1, max_length=1000, strict=True)]
Host = Annotated[str, StringConstraints(max_length=253, pattern=r"^[A-Za-z0-9.:\[\]-]*$", strict=True)]
ServiceKey = Annotated[str, StringConstraints(pattern=r"^\d{14}$", strict=True)]


class HitBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    session: PageLoad | None = None
    width: Width = 0
    service: ServiceKey | None = Field(default=None, description="LeiKa key; default: the site token's service.")


class PageviewHit(HitBase):
    """A page was shown (first load or a single-page navigation)."""

    kind: Literal["pageview"]
    path: RawPath
    ref: Host = Field(default="", description="Host name of the referrer ('' when none); never stored.")


class DownloadHit(HitBase):
    """A link to a file was followed."""

    kind: Literal["download"]
    path: RawPath


class OutboundHit(HitBase):
    """A link to another site was followed."""

    kind: Literal["outbound"]
    host: Host


class FormStartHit(HitBase):
    """An opted-in form got its first input focus."""

    kind: Literal["form_start"]


class FormStepHit(HitBase):
    """A step of an opted-in form was completed."""

    kind: Literal["form_step"]
    step: Annotated[int, Field(ge=1, le=100, strict=True)]
    name: Annotated[str, StringConstraints(min_length=1, max_length=120, strict=True)]


class FormSubmitHit(HitBase):
    """An opted-in form was submitted."""

    kind: Literal["form_submit"]
    duration: Annotated[int, Field(ge=0, le=30 * 86400, strict=True)]


class FormAbandonHit(HitBase):
    """The page of a started, unsubmitted form was left."""

    kind: Literal["form_abandon"]
    step: Annotated[int, Field(ge=0, le=100, strict=True)]


class FeedbackHit(HitBase):
    """The feedback widget was submitted."""

    kind: Literal["feedback"]
    stars: Annotated[int, Field(ge=1, le=5, strict=True)]
    comment: Annotated[str, StringConstraints(max_length=2000, strict=True)] | None = None


Hit = Annotated[
    PageviewHit | DownloadHit | OutboundHit | FormStartHit | FormStepHit | FormSubmitHit | FormAbandonHit
    | FeedbackHit,
    Field(discriminator="kind"),
]


class CollectResult(BaseModel):
    """Outcome of a collect request: counts only (the client keeps nothing)."""

    accepted_count: int = 0
    rejected_count: int = 0
    filtered: Literal["bot", "do_not_track"] | None = Field(
        default=None, description="Set when the request was counted apart and nothing was stored.")
