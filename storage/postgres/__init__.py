"""Postgres access: the asyncpg pool, migrations and one repository module per resource."""
