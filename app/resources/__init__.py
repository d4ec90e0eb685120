"""The REST resources of /api/v1: one route module per resource (workspaces, api-keys, webhooks,
entitlements, seo, mcp), each handler parse → one call to storage, the ledger or the sink → answer;
beside them the feature catalogue (features) and the entitlement counting (ledger), no HTTP."""
