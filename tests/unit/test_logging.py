"""Service logs: with KP_LOG_JSON every line is one JSON object, third-party loggers included."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import logging, sys
    import faststream  # creates its own "faststream" logger with a coloured handler at import
    from faststream._internal.logger.logging import get_logger
    from shared.observability import setup_logging

    setup_logging("INFO", json_logs=True)
    # FastStream creates its access logger lazily, after the service configured logging.
    access = get_logger(name="faststream.access.kafka", log_level=logging.INFO, stream=sys.stdout,
                        fmt="%(asctime)s %(levelname)s - %(message)s")
    access.info("Received")
    logging.getLogger("faststream").warning("FastStream app starting")
    logging.getLogger("aiokafka.consumer.group_coordinator").error(
        "Group Coordinator Request failed: %s", "[Error 15] GroupCoordinatorNotAvailableError")
    logging.getLogger("aiokafka.consumer.group_coordinator").error("Heartbeat session expired")
    logging.getLogger("uvicorn.error").info("Application startup complete.")
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42,
                                            extra={"color_message": "Started server process [\x1b[36m%d\x1b[0m]"})
""")


class TestJsonLogs:
    def test_every_line_is_json_and_coordinator_start_up_noise_is_not_an_error(self) -> None:
        out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
        lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
        records = [json.loads(line) for line in lines]  # fails on a plain-text line
        assert "\x1b" not in out.stdout + out.stderr
        assert "\\u001b" not in out.stdout  # nor escaped inside a JSON string
        by_message = {r["message"]: r for r in records}
        assert set(by_message) == {
            "Received", "FastStream app starting", "Application startup complete.", "Heartbeat session expired",
            "Started server process [42]",
            "Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError",
        }
        assert by_message["Received"]["name"] == "faststream.access.kafka"
        assert by_message["Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError"][
            "level"] == "INFO"
        assert by_message["Heartbeat session expired"]["level"] == "ERROR"  # a real problem stays an error
