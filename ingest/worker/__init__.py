"""The ingest worker (`python -m ingest`): Kafka → ClickHouse, batches, dead letters, lag."""
