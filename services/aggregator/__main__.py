"""Run the aggregator service: `python -m services.aggregator`."""

import gc

from services.aggregator.app import create_app
from services.aggregator.settings import AggregatorSettings
from shared.runner import run_service

if __name__ == "__main__":
    # A batch keeps tens of thousands of small objects alive while it is folded; with the default threshold the
    # cyclic collector runs every 700 allocations and scans them again and again (about a third of the fold).
    # The aggregator creates next to no reference cycles, so collect young objects far less often, and move
    # everything loaded at startup out of the collector's way.
    gc.set_threshold(20_000, 10, 10)
    gc.freeze()
    run_service(create_app, AggregatorSettings())
