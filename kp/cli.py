"""`kp`: command-line tool for the local stack and admin tasks."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from pathlib import Path
from typing import Annotated

import httpx
import typer

from kp import keycloak, local
from kp.apikeys import apikey_app, provision_demo_key
from kp.datasets_cmd import datasets_app
from kp.rejected_cmd import rejected_app
from kp.sitetokens import sitetoken_app
from kp.stack import StackError, kafka_libs
from kp.workflow_cmd import workflow_app

app = typer.Typer(help="Kommunal-Pulse command-line tool.", no_args_is_help=True)
stack_app = typer.Typer(help="Run the whole system locally (real Kafka and PostgreSQL, no Docker).")
app.add_typer(stack_app, name="stack")
app.add_typer(apikey_app, name="apikey")
app.add_typer(datasets_app, name="datasets")
app.add_typer(workflow_app, name="workflow")
app.add_typer(rejected_app, name="rejected")
app.add_typer(sitetoken_app, name="sitetoken")

RUN_DIR = Path(os.environ.get("KP_RUN_DIR", ".run"))


def _echo_urls(stack: local.LocalStack) -> None:
    typer.echo("")
    typer.echo("Kommunal-Pulse is running:")
    for label, url in stack.urls().items():
        typer.echo(f"  {label:<30} {url}")
    typer.echo("")
    typer.echo(f"  Kafka bootstrap     {stack.kafka_bootstrap}")
    typer.echo(f"  PostgreSQL          {stack.database_url}")
    for name, sp in stack.services.items():
        typer.echo(f"  {name:<10} {sp.url}   docs {sp.url}/docs   metrics {sp.url}/metrics")
        if name in ("ingest", "aggregator", "workflow"):
            typer.echo(f"  {'':<10} AsyncAPI {sp.url}/asyncapi.json")
    for component in stack.components:
        for note in component.notes():
            typer.echo(f"  {note}")
    if stack.keycloak is not None:
        for line in keycloak.describe(stack.keycloak):
            typer.echo(line)


@stack_app.command("up")
def stack_up(
    simulate: Annotated[bool, typer.Option(help="Start the demo traffic simulator.")] = True,
    rate: Annotated[float, typer.Option(help="Simulated events per second.")] = 50.0,
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 1,
    demo_data: Annotated[bool, typer.Option(help="On first start, load 13 months of demo history, application "
                                                 "cases and portal datasets.")] = True,
    detach: Annotated[bool, typer.Option(help="Leave the stack running in the background.")] = False,
    with_keycloak: Annotated[bool, typer.Option("--keycloak/--no-keycloak",
                                                help="Start Keycloak for the clerk view's login.")] = True,
    brokers: Annotated[int, typer.Option(min=1, max=3, help="Kafka brokers: 1, or 3 (KRaft cluster, replication "
                                                            "factor 3, min.insync.replicas=2).")] = 1,
    pg_replica: Annotated[bool, typer.Option("--pg-replica/--no-pg-replica",
                                             help="PostgreSQL with a synchronous streaming replica; the services "
                                                  "connect to both (target_session_attrs=read-write).")] = False,
) -> None:
    """Start Kafka, PostgreSQL, migrations, topics, the four services and (optionally) demo data and traffic."""
    if brokers == 2:
        typer.echo("error: --brokers takes 1 or 3 (two voters cannot lose one and keep a quorum)", err=True)
        raise typer.Exit(2)
    stack = local.LocalStack.from_env(RUN_DIR, fixed_ports=True)
    stack.brokers = brokers
    stack.pg_replica = pg_replica
    stack.identity = with_keycloak
    stack.components = [factory(RUN_DIR) for factory in local.component_factories(demo=demo_data)]
    try:
        stack.start_infra()
        stack.start_services(extra_env=local.STACK_ENV)
        assert stack.database_url
        stack.demo_key = asyncio.run(provision_demo_key(stack.database_url))
        if demo_data:
            from kp import demo

            asyncio.run(demo.seed_once(stack, seed, echo=typer.echo))
        if simulate and detach:
            stack.start_simulator(rate, seed)
        stack.write_state()
    except KeyboardInterrupt:
        typer.echo("Interrupted; stopping ...", err=True)
        stack.stop()
        raise typer.Exit(130) from None
    except (StackError, OSError, RuntimeError, httpx.HTTPError) as exc:  # RuntimeError: aiokafka's KafkaError
        stack.stop()
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    _echo_urls(stack)
    typer.echo(f"Demo ingest API key (all six cities): {stack.demo_key}")
    if detach:
        traffic_note = f"demo traffic at {rate:g} events/s" if simulate else "no demo traffic"
        typer.echo(f"Running in the background ({traffic_note}); `kp stack status` shows it, "
                   "`kp stack down` stops it.")
        return
    typer.echo("Press Ctrl-C to stop.")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    demo_key = stack.demo_key
    try:
        if simulate:
            from kp import simulator

            async def traffic() -> None:
                # Ctrl-C and SIGTERM end the traffic through the loop (no waiting thread that asyncio.run
                # would have to join on shutdown, which hung on Ctrl-C).
                done = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, done.set)
                task = asyncio.create_task(simulator.run(stack.services["ingest"].url, rate, seed, None,
                                                         demo_key))
                waiter = asyncio.create_task(done.wait())
                try:
                    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        typer.echo(f"error: demo traffic stopped: {task.exception()!r}", err=True)
                finally:
                    task.cancel()
                    waiter.cancel()
                    stop.set()

            asyncio.run(traffic())
        else:
            stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        typer.echo("Stopping ...")
        stack.stop()
        typer.echo("Stopped; data kept in " + str(RUN_DIR))


@stack_app.command("down")
def stack_down(
    purge: Annotated[bool, typer.Option(help="Also delete the stack's data (run folder and database cluster).")]
    = False,
) -> None:
    """Stop a stack left running with `kp stack up --detach`."""
    stopped = local.stop_from_state(RUN_DIR)
    typer.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    if purge:
        local.purge_data(RUN_DIR)
        typer.echo(f"deleted the data of {RUN_DIR}")


@stack_app.command("status")
def stack_status() -> None:
    """Show what runs and whether each service is ready."""
    state = local.read_state(RUN_DIR)
    if state is None:
        typer.echo("not running")
        raise typer.Exit(1)
    typer.echo(f"kafka      {state['kafka_bootstrap']}")
    typer.echo(f"postgres   {state['database_url']}")
    services = state.get("services") or {}
    assert isinstance(services, dict)
    for name, info in services.items():
        try:
            ready = httpx.get(info["url"] + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            ready = False
        typer.echo(f"{name:<10} {info['url']}  {'ready' if ready else 'NOT READY'}")
    simulator_pid = state.get("simulator_pid")
    if isinstance(simulator_pid, int):
        running = local.pid_alive(simulator_pid)
        typer.echo(f"simulator  pid {simulator_pid}  {'running' if running else 'STOPPED'}")
    else:
        typer.echo("simulator  not started (attached stacks run it in the foreground)")
    urls = state.get("urls") or {}
    assert isinstance(urls, dict)
    for label, url in urls.items():
        typer.echo(f"  {label:<30} {url}")


@stack_app.command("fetch")
def stack_fetch() -> None:
    """Resolve the Kafka jars and Keycloak from Maven Central into the cache (done automatically on first start)."""
    typer.echo(str(kafka_libs()))
    typer.echo(str(keycloak.template_home()))


def _urls() -> tuple[str, str]:
    state = local.read_state(RUN_DIR) or {}
    kafka = os.environ.get("KP_KAFKA_BOOTSTRAP") or str(state.get("kafka_bootstrap") or "")
    db = os.environ.get("KP_DATABASE_URL") or str(state.get("database_url") or "")
    if not kafka or not db:
        typer.echo("no stack: run `kp stack up` or set KP_KAFKA_BOOTSTRAP and KP_DATABASE_URL", err=True)
        raise typer.Exit(1)
    return kafka, db


@app.command()
def migrate() -> None:
    """Apply pending database migrations."""
    from shared.db import migrate as run_migrations

    _, db = _urls()
    applied = asyncio.run(run_migrations(db))
    typer.echo("applied: " + (", ".join(applied) if applied else "nothing pending"))


@app.command()
def topics() -> None:
    """Create the project's Kafka topics (explicit partitions) if missing."""
    from shared.kafka import ALL_TOPICS, ensure_topics
    from shared.settings import KPSettings

    kafka, _ = _urls()
    options = KPSettings(kafka_bootstrap=kafka).kafka_client_options()
    # One replica per listed broker, at most 3 (a `kp stack up --brokers 3` cluster lists all three).
    replication = min(len([b for b in kafka.split(",") if b.strip()]), 3)
    created = asyncio.run(ensure_topics(kafka, replication=replication, client_options=options))
    for t in ALL_TOPICS:
        typer.echo(f"{t.name:<28} partitions={t.partitions}  {'created' if t.name in created else 'exists'}")


@app.command()
def simulate(
    rate: Annotated[float, typer.Option(help="Events per second.")] = 50.0,
    seed: Annotated[int, typer.Option(help="Seed; the same seed sends the same events.")] = 1,
    duration: Annotated[float | None, typer.Option(help="Seconds to run; default until Ctrl-C.")] = None,
    ingest_url: Annotated[str | None, typer.Option(help="Ingest base URL (default: the running stack's).")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="KP_SIMULATOR_API_KEY",
                                                help="Ingest API key (default: the running stack's demo key).")] = None,
) -> None:
    """Send realistic demo traffic for the six cities to ingest."""
    from kp import simulator

    state = local.read_state(RUN_DIR) or {}
    if ingest_url is None:
        ingest_url = local.service_url(state, "ingest")
        if ingest_url is None:
            typer.echo("no running stack: start one with `kp stack up` or pass --ingest-url", err=True)
            raise typer.Exit(1)
    if api_key is None and isinstance(state.get("demo_key"), str):
        api_key = str(state["demo_key"])
    accepted = asyncio.run(simulator.run(ingest_url, rate, seed, duration, api_key))
    typer.echo(f"accepted {accepted} events")


def network_error(exc: BaseException) -> str | None:
    """One line saying what could not be reached and what to do, or None if `exc` is no network error."""
    import asyncpg
    import httpx
    from aiokafka.errors import KafkaConnectionError

    if isinstance(exc, httpx.TransportError):
        try:
            where = f"{exc.request.url.scheme}://{exc.request.url.netloc.decode()}"
        except RuntimeError:  # no request attached
            where = "the service"
        if isinstance(exc, httpx.TimeoutException):
            return f"no answer from {where} in time; check that the service runs and is not overloaded"
        return (f"cannot reach {where} ({type(exc).__name__}); start the local stack with `kp stack up` "
                "or give the right address with --url / KP_PUBLISHER_URL")
    if isinstance(exc, KafkaConnectionError):
        return f"cannot reach Kafka ({exc}); start the local stack with `kp stack up` or set KP_KAFKA_BOOTSTRAP"
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        return f"PostgreSQL refused: {str(exc).splitlines()[0]}; check KP_DATABASE_URL"
    if isinstance(exc, OSError | TimeoutError):
        return (f"cannot reach PostgreSQL or Kafka ({exc.strerror or type(exc).__name__}); start the local stack "
                "with `kp stack up` or set KP_DATABASE_URL / KP_KAFKA_BOOTSTRAP")
    return None


def main() -> None:
    """Entry point of `kp`: network failures end in one line on stderr and exit code 1, not a traceback."""
    try:
        app()
    except Exception as exc:
        message = network_error(exc)
        if message is None:
            raise
        typer.echo(f"error: {message}", err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
