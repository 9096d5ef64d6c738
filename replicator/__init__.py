"""The replication worker process (``python -m replicator``): PostgreSQL into ClickHouse."""
