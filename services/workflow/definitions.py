"""Declarative, versioned workflow definitions: pydantic models, YAML loader and the registry.

A definition is identified by (name, version). New cases use the highest version for their service; a
running case stays pinned to the version it was opened with. Invalid definitions are refused when the
service starts, with the file and the path of the offending field.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from shared.reference import services as reference_services

StepId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,64}$", strict=True)]
QueueName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_.-]{1,64}$", strict=True)]
DocType = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{2,40}$", strict=True)]
AGS = Annotated[str, StringConstraints(pattern=r"^\d{8}$", strict=True)]
Cents = Annotated[int, Field(ge=0, le=100_000_000)]

DEFINITIONS_DIR = Path(__file__).resolve().parent / "definitions"

Action = Literal[
    "acknowledge", "check_completeness", "request_documents", "calculate_fee", "file", "notify",
    "start_fiction_watch", "stop_fiction_watch",
]
ACTION_OUTCOMES: dict[str, tuple[str, ...]] = {
    "acknowledge": ("done",),
    "check_completeness": ("complete", "incomplete"),
    "request_documents": ("done",),
    "calculate_fee": ("due", "free"),
    "file": ("done",),
    "notify": ("done",),
    "start_fiction_watch": ("done",),
    "stop_fiction_watch": ("done",),
}
Decision = Literal["approved", "rejected", "partially_approved", "extend"]


class DefinitionError(ValueError):
    """A definition file is invalid; the message names the file and the field."""


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Retry(Model):
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    base_s: Annotated[float, Field(gt=0, le=3600)] = 2.0
    max_s: Annotated[float, Field(gt=0, le=86400)] = 600.0


class Deadline(Model):
    """A deadline measured from entering the step, with an optional reminder and what happens on breach."""

    after: timedelta
    reminder_before: timedelta | None = None
    on_breach: StepId | None = Field(None, description="Step to go to; none keeps the step and escalates.")
    escalate_to_queue: QueueName | None = None

    @model_validator(mode="after")
    def _reminder_inside(self) -> Deadline:
        if self.after <= timedelta(0):
            raise ValueError("after must be positive")
        if self.reminder_before is not None and not timedelta(0) < self.reminder_before < self.after:
            raise ValueError("reminder_before must be positive and shorter than after")
        return self


class Assignment(Model):
    """Queue rule: candidates by municipality (else the default list); the least loaded candidate wins."""

    queues: Annotated[list[QueueName], Field(min_length=1)]
    by_municipality: dict[AGS, Annotated[list[QueueName], Field(min_length=1)]] = Field(default_factory=dict)


class StepBase(Model):
    id: StepId
    title: Annotated[str, StringConstraints(min_length=1, max_length=120)]


class AutomaticStep(StepBase):
    kind: Literal["automatic"]
    action: Action
    next: StepId | None = None
    when: dict[str, StepId] = Field(default_factory=dict, description="Outcome of the action to the next step.")
    notification: Literal["bescheid", "information", "fiktion_eingetreten"] | None = None
    retry: Retry = Retry()

    def target(self, outcome: str) -> str | None:
        return self.when.get(outcome) or self.next

    @model_validator(mode="after")
    def _outcomes_mapped(self) -> AutomaticStep:
        outcomes = ACTION_OUTCOMES[self.action]
        unknown = set(self.when) - set(outcomes)
        if unknown:
            raise ValueError(f"action {self.action} has no outcome {sorted(unknown)}; it has {list(outcomes)}")
        missing = [o for o in outcomes if self.target(o) is None]
        if missing:
            raise ValueError(f"outcome(s) {missing} of action {self.action} lead nowhere; set next or when")
        if self.action == "notify" and self.notification is None:
            raise ValueError("action notify needs a notification kind")
        return self


class HumanStep(StepBase):
    kind: Literal["human"]
    assignment: Assignment
    decisions: Annotated[dict[Decision, StepId], Field(min_length=1)]
    deadline: Deadline | None = None


class WaitStep(StepBase):
    kind: Literal["wait"]
    wait_for: Literal["documents", "payment"]
    next: StepId
    deadline: Deadline | None = None


class TimerStep(StepBase):
    kind: Literal["timer"]
    after: timedelta
    next: StepId


class EndStep(StepBase):
    kind: Literal["end"]
    outcome: Literal["approved", "rejected", "partially_approved", "filed", "acknowledged", "decision"]


Step = Annotated[AutomaticStep | HumanStep | WaitStep | TimerStep | EndStep, Field(discriminator="kind")]


class FeeTable(Model):
    default_cents: Cents
    by_municipality: dict[AGS, Cents] = Field(default_factory=dict)

    def fee_for(self, municipality: str) -> int:
        return self.by_municipality.get(municipality, self.default_cents)


class Statutory(Model):
    """What the Eingangsbestätigung tells the applicant (§ 71b Abs. 6 VwVfG)."""

    processing_days: Annotated[int, Field(ge=1, le=730)]
    consequence: Literal["genehmigungsfiktion", "none"] = "none"
    legal_basis: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class Fiction(Model):
    """Genehmigungsfiktion watch: the permit is deemed granted `months` after completeness unless decided."""

    months: Annotated[int, Field(ge=1, le=12)] = 3
    alert_before: timedelta = timedelta(days=14)
    extension_months: Annotated[int, Field(ge=1, le=12)] = 2
    on_fiction: StepId


class Definition(Model):
    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_.-]{1,64}$", strict=True)]
    version: Annotated[int, Field(ge=1)]
    service: Annotated[str, StringConstraints(pattern=r"^\d{14}$", strict=True)] | None = None
    title: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    start: StepId
    required_documents: list[DocType] = Field(default_factory=list)
    fees: FeeTable | None = None
    statutory: Statutory
    fiction: Fiction | None = None
    steps: Annotated[list[Step], Field(min_length=1)]

    @model_validator(mode="after")
    def _consistent(self) -> Definition:
        ids = [s.id for s in self.steps]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate step ids {dupes}")
        known = set(ids)
        if self.start not in known:
            raise ValueError(f"start step {self.start!r} is not defined")
        for step in self.steps:
            for target in _targets(step):
                if target not in known:
                    raise ValueError(f"step {step.id!r} leads to undefined step {target!r}")
            if isinstance(step, AutomaticStep):
                if step.action == "calculate_fee" and self.fees is None:
                    raise ValueError(f"step {step.id!r} calculates a fee but the definition has no fee table")
                if step.action in ("start_fiction_watch", "stop_fiction_watch") and self.fiction is None:
                    raise ValueError(f"step {step.id!r} watches the Genehmigungsfiktion but fiction is not set")
            if isinstance(step, HumanStep) and "extend" in step.decisions and self.fiction is None:
                raise ValueError(f"step {step.id!r} offers 'extend' but the definition has no fiction watch")
        if self.fiction is not None and self.fiction.on_fiction not in known:
            raise ValueError(f"fiction.on_fiction leads to undefined step {self.fiction.on_fiction!r}")
        if not any(isinstance(s, EndStep) for s in self.steps):
            raise ValueError("no end step")
        if self.service is not None and self.service not in _known_services():
            raise ValueError(f"service {self.service} is not a LeiKa key of the reference table")
        return self

    def step(self, step_id: str) -> AutomaticStep | HumanStep | WaitStep | TimerStep | EndStep:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)


def _targets(step: AutomaticStep | HumanStep | WaitStep | TimerStep | EndStep) -> list[str]:
    out: list[str] = []
    if isinstance(step, AutomaticStep):
        out += [t for t in [step.next, *step.when.values()] if t]
    elif isinstance(step, HumanStep):
        out += list(step.decisions.values())
    elif isinstance(step, (WaitStep, TimerStep)):
        out.append(step.next)
    if isinstance(step, (HumanStep, WaitStep)) and step.deadline and step.deadline.on_breach:
        out.append(step.deadline.on_breach)
    return out


def _known_services() -> set[str]:
    return {s.leika_key for s in reference_services()}


def parse_definition(data: Any, origin: str) -> Definition:
    """Validate one definition; the error names the origin and each offending path."""
    try:
        return Definition.model_validate(data)
    except ValidationError as exc:
        lines = [f"{origin}: invalid workflow definition"]
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(root)"
            lines.append(f"  {loc}: {err['msg']}")
        raise DefinitionError("\n".join(lines)) from None


class Registry:
    """All loaded definitions: by (name, version), and the newest version per service."""

    def __init__(self, definitions: list[Definition]) -> None:
        self._by_key: dict[tuple[str, int], Definition] = {}
        for d in definitions:
            if (d.name, d.version) in self._by_key:
                raise DefinitionError(f"definition {d.name} version {d.version} is defined twice")
            self._by_key[(d.name, d.version)] = d
        self._latest: dict[str | None, Definition] = {}
        names_by_service: dict[str | None, str] = {}
        for d in sorted(definitions, key=lambda d: d.version):
            other = names_by_service.setdefault(d.service, d.name)
            if other != d.name:
                raise DefinitionError(f"service {d.service} has two definitions: {other} and {d.name}")
            self._latest[d.service] = d

    def get(self, name: str, version: int) -> Definition:
        return self._by_key[(name, version)]

    def for_service(self, service: str) -> Definition | None:
        """Newest version for the service, else the generic fallback definition (service unset)."""
        return self._latest.get(service) or self._latest.get(None)

    def all(self) -> list[Definition]:
        return list(self._by_key.values())


def load_definitions(directory: Path = DEFINITIONS_DIR) -> Registry:
    """Load every `*.yaml` file of the directory; refuse the whole set if one is invalid."""
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise DefinitionError(f"no workflow definitions in {directory.name}/")
    definitions = []
    for path in files:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise DefinitionError(f"{path.name}: not valid YAML: {exc}") from None
        definitions.append(parse_definition(data, path.name))
    return Registry(definitions)
