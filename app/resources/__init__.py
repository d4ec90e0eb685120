"""The REST resources of /api/v1: one route module per resource (workspaces, api-keys, webhooks,
entitlements, seo, mcp), each handler parse → one call to storage or a producer → answer."""
