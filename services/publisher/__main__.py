"""Run the publisher service: `python -m services.publisher`."""

from services.publisher.app import create_app
from services.publisher.settings import PublisherSettings
from shared.runner import run_service

if __name__ == "__main__":
    run_service(create_app, PublisherSettings())
