"""`kp stack up` (what `make run` runs): starts everything with demo traffic, stops cleanly, keeps data."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from kp.local import purge_data

ROOT = Path(__file__).resolve().parents[2]


def _start(run_dir: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if k not in ("KP_KAFKA_BOOTSTRAP", "KP_DATABASE_URL")}
    env["KP_RUN_DIR"] = str(run_dir)
    proc = subprocess.Popen(
        [sys.executable, "-m", "kp.cli", "stack", "up", "--rate", "200", "--seed", "3", "--no-keycloak",
         "--no-demo-data"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    urls: dict[str, str] = {}
    deadline = time.monotonic() + 180
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.match(r"\s+(ingest|aggregator|publisher|workflow)\s+(http://\S+)", line)
        if m:
            urls[m.group(1)] = m.group(2)
        if "Press Ctrl-C" in line or time.monotonic() > deadline:
            break
    assert set(urls) == {"ingest", "aggregator", "publisher", "workflow"}, urls
    return proc, urls


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    return out


def _total(publisher: str) -> int:
    r = httpx.get(f"{publisher}/v1/kpis", params={"municipality": "06413000", "family": "usage"}, timeout=10)
    r.raise_for_status()
    # counts are perturbed (Cell Key Method) but never withheld
    return sum(row["value"] or 0 for row in r.json()["items"] if row["metric"] == "sessions_started")


class TestStackUp:
    def test_runs_with_demo_traffic_stops_on_ctrl_c_and_keeps_data(self) -> None:
        run_dir = ROOT / ".run" / f"stack-{uuid.uuid4().hex[:8]}"
        try:
            proc, urls = _start(run_dir)
            try:
                deadline = time.monotonic() + 90
                while _total(urls["publisher"]) == 0:
                    assert time.monotonic() < deadline, "demo traffic never reached the KPIs"
                    time.sleep(0.5)
                counted = _total(urls["publisher"])
            finally:
                out = _stop(proc)
            assert proc.returncode == 0, out
            assert "Stopped" in out
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"{urls['ingest']}/healthz", timeout=2)

            proc, urls = _start(run_dir)  # a second start reuses the data
            try:
                assert _total(urls["publisher"]) >= counted > 0
            finally:
                _stop(proc)
        finally:
            purge_data(run_dir)  # the run folder and the cluster (outside it as root)
