"""Run the aggregator service: `python -m services.aggregator`."""

from services.aggregator.app import create_app
from services.aggregator.settings import AggregatorSettings
from shared.runner import run_service

if __name__ == "__main__":
    run_service(create_app, AggregatorSettings())
