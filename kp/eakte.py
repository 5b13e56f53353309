"""Demo E-Akte of the local stack: the HTTP API the workflow's `HttpEAkte` adapter speaks, in one process.

`PUT /documents/{key}` files a record (idempotent by key) into a JSON-lines journal and answers its reference.
Like a real records system it refuses a document it cannot take: a record listing the document type
`scan_unlesbar` (an unreadable scan) gets `422`, so the workflow retries and then parks the case, and the demo
shows a parked filing. Run by `kp stack up` (component `DemoEAkte`); `python -m kp.eakte --port P --journal F`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from kp.stack import _pid_alive, _stop_pid, free_port, port_is_free, wait_for_port

UNREADABLE = "scan_unlesbar"
"""Document type the demo E-Akte refuses."""


def create_app(journal: Path) -> Any:
    """The E-Akte's HTTP API over the journal file."""
    from fastapi import FastAPI, HTTPException

    journal.parent.mkdir(parents=True, exist_ok=True)
    filed: dict[str, str] = {}
    if journal.exists():
        for line in journal.read_text().splitlines():
            entry = json.loads(line)
            filed[entry["key"]] = entry["reference"]
    app = FastAPI(title="Demo-E-Akte", docs_url=None, redoc_url=None, openapi_url=None)

    @app.put("/documents/{key}")
    def file_document(key: str, record: dict[str, Any]) -> dict[str, str]:
        if key in filed:
            return {"reference": filed[key]}
        if UNREADABLE in record.get("documents", []):
            raise HTTPException(422, "Dokument nicht lesbar: die E-Akte nimmt den Scan nicht an")
        reference = f"demo-eakte:{record.get('municipality', '')}:{len(filed) + 1:06d}"
        with journal.open("a") as out:
            out.write(json.dumps({"key": key, "reference": reference, "record": record}) + "\n")
            out.flush()
            os.fsync(out.fileno())
        filed[key] = reference
        return {"reference": reference}

    return app


class DemoEAkte:
    """The demo E-Akte as a component of the local stack (see `kp.stack.Component`)."""

    name = "demo-eakte"

    def __init__(self, run_dir: Path) -> None:
        self.root = run_dir / self.name
        self.port = 0

    def start(self, database_url: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        saved = self.root / "port"
        if saved.exists() and port_is_free(int(saved.read_text())):
            self.port = int(saved.read_text())
        self.port = self.port or free_port()
        saved.write_text(str(self.port))
        log = open(self.root / "demo-eakte.log", "ab")  # noqa: SIM115 - handed to the child process
        proc = subprocess.Popen(
            [sys.executable, "-m", "kp.eakte", "--port", str(self.port), "--journal", str(self.root / "journal.jsonl")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        (self.root / "pid").write_text(str(proc.pid))
        wait_for_port(self.port, 30, proc)

    def stop(self) -> None:
        pid_file = self.root / "pid"
        if pid_file.exists():
            pid = int(pid_file.read_text())
            if _pid_alive(pid):
                _stop_pid(pid)
            pid_file.unlink(missing_ok=True)

    def service_env(self) -> dict[str, str]:
        return {"KP_EAKTE": "http", "KP_EAKTE_URL": f"http://127.0.0.1:{self.port}"}

    def urls(self) -> dict[str, str]:
        return {}

    def notes(self) -> list[str]:
        return [f"Demo-E-Akte (HTTP adapter)  http://127.0.0.1:{self.port}  journal {self.root / 'journal.jsonl'}"]


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--journal", type=Path, required=True)
    args = parser.parse_args()
    uvicorn.run(create_app(args.journal), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
