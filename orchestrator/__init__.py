"""The per-host supervisor, its runtimes, state store, REST API and the tandem CLI."""
