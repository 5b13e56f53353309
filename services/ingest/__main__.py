"""Run the ingest service: `python -m services.ingest`."""

from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from shared.runner import run_service

if __name__ == "__main__":
    run_service(create_app, IngestSettings())
