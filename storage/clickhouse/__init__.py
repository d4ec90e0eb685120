"""ClickHouse access: the client, its schema (schema/NNNN_*.sql) and the usage log queries."""
