"""What every Sluice process tells its operator: Prometheus metrics (metrics.py) and structured
logs (logs.py). Here, below app and ingest, because all three layers report through them."""
