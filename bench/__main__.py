"""`python -m bench [--quick] [--only NAME]`: run every benchmark module against one local stack."""

from bench.harness import main

if __name__ == "__main__":
    raise SystemExit(main())
