"""The API side of ingestion: the hand-off of events to Kafka behind the Sink protocol (sink), its
durable implementation (producer, spool, batches) and the drop counts."""
