"""The API side of ingestion: the durable hand-off of events to Kafka (producer, spool, batches, drops)."""
