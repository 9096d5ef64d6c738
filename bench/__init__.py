"""Side-by-side benchmark of the sessions realtime channels and the Durable Streams reference server.

DESIGN.md ("Tests and benchmarks") keeps speed out of timed tests: it is measured here, in one run,
against `@durable-streams/server` (file-backed, so both sides are durable), and printed as a table.
Run it with ``python -m bench --help``.
"""
