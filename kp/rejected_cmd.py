"""`kp rejected`: list and show the records consumers set aside, and replay chosen ones after a fix.

A replay re-publishes the original value, key and headers of a rejected record to its source topic, so it goes
through the same checks and dedup as any record (an event already counted or applied counts once). Only
records kept whole (`replayable`) can be replayed; a rejected topic may hold the same source record twice (a
redelivered batch), it is replayed once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import typer
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from shared.kafka import REJECTED_TOPICS, make_producer
from shared.rejections import RejectedEvent
from shared.settings import KPSettings

rejected_app = typer.Typer(help="Records the consumers set aside (rejected topics): list, show, replay.",
                           no_args_is_help=True)

BootstrapOpt = Annotated[str | None, typer.Option("--bootstrap", help="Kafka bootstrap (default: KP_KAFKA_BOOTSTRAP, "
                                                                      "else the local stack's).")]
TopicOpt = Annotated[list[str] | None, typer.Option("--topic", help="Rejected topic(s); default all of them.")]
ReasonOpt = Annotated[list[str] | None, typer.Option("--reason", help="Only these reasons.")]
SinceOpt = Annotated[datetime | None, typer.Option("--since", help="Only records rejected at or after this time "
                                                                   "(ISO 8601, with offset).")]


@dataclass(frozen=True)
class Found:
    """One record of a rejected topic, with its own position there."""

    rejected_topic: str
    partition: int
    offset: int
    record: RejectedEvent | None
    """None when the record is not a valid rejected record (shown as such, never replayed)."""

    @property
    def source(self) -> str:
        r = self.record
        return "?" if r is None else f"{r.topic}/{r.partition}/{r.offset}"


def _connection(bootstrap: str | None) -> tuple[str, dict[str, object]]:
    """Bootstrap and client options: `--bootstrap`, else `KP_KAFKA_BOOTSTRAP`, else the local stack's."""
    settings = KPSettings()
    options = {k: v for k, v in settings.kafka_client_options().items() if k != "bootstrap_servers"}
    if bootstrap:
        return bootstrap, options
    if "kafka_bootstrap" not in settings.model_fields_set:
        from kp import local
        from kp.cli import RUN_DIR

        state = local.read_state(RUN_DIR) or {}
        if isinstance(state.get("kafka_bootstrap"), str):
            return str(state["kafka_bootstrap"]), options
    return settings.kafka_bootstrap, options


async def read_all(bootstrap: str, topics: Iterable[str], options: dict[str, object] | None = None) -> list[Found]:
    """Every record of the rejected topics, from the beginning up to their current end."""
    out: list[Found] = []
    consumer = AIOKafkaConsumer(**{**(options or {}), "bootstrap_servers": bootstrap},
                                enable_auto_commit=False, max_partition_fetch_bytes=2_000_000)
    await consumer.start()
    try:
        for topic in topics:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                await consumer._client.force_metadata_update()  # a topic not looked up before
                partitions = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            if not tps:
                continue
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            pending = {tp for tp in tps if ends[tp] > 0}
            while pending:
                batch = await consumer.getmany(*pending, timeout_ms=1000)
                for records in batch.values():
                    for r in records:
                        out.append(Found(topic, r.partition, r.offset, _parse(r.value)))
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
    finally:
        await consumer.stop()
    return out


def _parse(value: bytes | None) -> RejectedEvent | None:
    try:
        return RejectedEvent.model_validate_json(value or b"")
    except ValidationError:
        return None


def select(found: Iterable[Found], reasons: Iterable[str] | None = None, since: datetime | None = None,
           positions: Iterable[str] | None = None) -> list[Found]:
    """Filter by reason, rejection time and source position (`topic/partition/offset`)."""
    wanted_reasons, wanted_positions = set(reasons or ()), set(positions or ())
    out = []
    for f in found:
        r = f.record
        if r is None:
            continue
        if wanted_reasons and r.reason not in wanted_reasons:
            continue
        if since is not None and r.rejected_at < since:
            continue
        if wanted_positions and f.source not in wanted_positions:
            continue
        out.append(f)
    return out


async def replay(bootstrap: str, chosen: Iterable[Found], options: dict[str, object] | None = None) -> list[Found]:
    """Re-publish the original value, key and headers of each replayable record to its source topic (each source
    record once); return the records replayed."""
    todo: dict[str, Found] = {}
    for f in chosen:
        if f.record is not None and f.record.replayable and f.record.topic:
            todo.setdefault(f.source, f)
    producer = make_producer(bootstrap, max_request_size=1_048_576, **(options or {}))
    await producer.start()
    try:
        for f in todo.values():
            r = f.record
            assert r is not None
            assert r.topic is not None
            await producer.send_and_wait(r.topic, r.raw_value(), key=r.raw_key(), headers=r.raw_headers() or None)
    finally:
        await producer.stop()
    return list(todo.values())


def _line(f: Found) -> str:
    r = f.record
    if r is None:
        return f"{f.rejected_topic}/{f.partition}/{f.offset}  (not a rejected record)"
    return (f"{f.rejected_topic}/{f.partition}/{f.offset}  {r.rejected_at.isoformat(timespec='seconds')}  "
            f"{r.reason:<18} {f.source:<40} {r.consumer or r.origin:<22} {r.event_id or '-':<36} "
            f"{r.raw_bytes}B{'' if r.replayable else '  not replayable'}")


@rejected_app.command("list")
def list_(topic: TopicOpt = None, reason: ReasonOpt = None, since: SinceOpt = None, bootstrap: BootstrapOpt = None,
          as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False) -> None:
    """List rejected records: where each came from, why, when, and whether it can be replayed."""
    server, options = _connection(bootstrap)
    found = select(asyncio.run(read_all(server, topic or sorted(REJECTED_TOPICS.values()), options)), reason, since)
    for f in found:
        assert f.record is not None
        if as_json:
            typer.echo(json.dumps({"rejected": f"{f.rejected_topic}/{f.partition}/{f.offset}",
                                   **f.record.model_dump(mode="json", exclude={"raw", "raw_base64"})}))
        else:
            typer.echo(_line(f))
    typer.echo(f"{len(found)} rejected records", err=True)


@rejected_app.command("show")
def show(source_topic: Annotated[str, typer.Argument(help="The topic the record was consumed from.")],
         partition: int, offset: int, topic: TopicOpt = None, bootstrap: BootstrapOpt = None) -> None:
    """Show one rejected record in full (errors, key, headers, payload), found by its source position."""
    server, options = _connection(bootstrap)
    topics = topic or [REJECTED_TOPICS.get(source_topic, f"{source_topic.removesuffix('.v1')}.rejected.v1")]
    found = select(asyncio.run(read_all(server, topics, options)),
                   positions=[f"{source_topic}/{partition}/{offset}"])
    if not found:
        typer.echo(f"no rejected record of {source_topic}/{partition}/{offset} in {', '.join(topics)}", err=True)
        raise typer.Exit(1)
    record = found[-1].record
    assert record is not None
    typer.echo(json.dumps(record.model_dump(mode="json"), indent=2, ensure_ascii=False))


@rejected_app.command("replay")
def replay_(
    topic: TopicOpt = None, reason: ReasonOpt = None, since: SinceOpt = None,
    position: Annotated[list[str] | None, typer.Option(
        "--position", help="Only this source record (topic/partition/offset); repeatable.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Publish; without it only show what would be replayed.")] = False,
    bootstrap: BootstrapOpt = None,
) -> None:
    """Re-publish chosen rejected records to their source topics (after the cause was fixed)."""
    if not (reason or since or position):
        typer.echo("choose records with --reason, --since or --position", err=True)
        raise typer.Exit(2)
    server, options = _connection(bootstrap)
    chosen = select(asyncio.run(read_all(server, topic or sorted(REJECTED_TOPICS.values()), options)),
                    reason, since, position)
    whole = [f for f in chosen if f.record is not None and f.record.replayable]
    for f in chosen:
        if f not in whole:
            typer.echo(f"skipped (payload, key or headers were cut, or a header name is not UTF-8): {_line(f)}",
                       err=True)
    if not yes:
        for f in whole:
            typer.echo(f"would replay {_line(f)}")
        typer.echo(f"{len(whole)} records would be replayed; add --yes to publish them", err=True)
        return
    done = asyncio.run(replay(server, whole, options))
    for f in done:
        typer.echo(f"replayed {_line(f)}")
    typer.echo(f"{len(done)} records replayed", err=True)
