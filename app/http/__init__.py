"""The HTTP kernel every route shares: routes as data, middleware, errors and their envelope, bodies,
parsing and validation, listing, idempotency, presenters, health, metrics and the OpenAPI document."""
