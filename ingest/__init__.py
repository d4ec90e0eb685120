"""Sluice workers: Kafka producer and consumer, and the tasks that move events."""
