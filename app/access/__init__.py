"""Who may call and how often: API keys (tokens, authentication), scopes, plan tiers and rate limits."""
