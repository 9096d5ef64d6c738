"""PostgreSQL ``sessions`` changes to ClickHouse ``sessions_v1``: decoding, row mapping, batching, DDL.

The process that runs it lives in ``replicator/``; ``sessions migrate`` calls
``ddl.apply_clickhouse_schema``.
"""
