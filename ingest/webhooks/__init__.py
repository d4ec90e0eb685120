"""The webhook dispatcher (`python -m ingest.webhooks.dispatcher`): outbox → signed deliveries through the
SSRF guard, retried on a schedule."""
