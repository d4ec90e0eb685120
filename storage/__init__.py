"""Storage layer: Postgres, Redis, Kafka and ClickHouse access, plus the local service stack."""
