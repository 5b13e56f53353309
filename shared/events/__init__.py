"""Event contracts v1 (JSON): one envelope, typed `data` per event type, discriminated on `type`."""

from shared.events.application import ApplicationEvent, application_event_adapter
from shared.events.base import AGS, Envelope, LeiKaKey
from shared.events.usage import USAGE_EVENT_TYPES, UsageEvent, usage_event_adapter
from shared.events.workflow import WorkflowEvent, workflow_event_adapter

__all__ = [
    "AGS",
    "USAGE_EVENT_TYPES",
    "ApplicationEvent",
    "Envelope",
    "LeiKaKey",
    "UsageEvent",
    "WorkflowEvent",
    "application_event_adapter",
    "usage_event_adapter",
    "workflow_event_adapter",
]
