"""Benchmarks and the soak run (``python -m bench.soak``); not shipped with tandem."""
