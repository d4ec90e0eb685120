"""The scope catalogue and the one function that decides whether scopes grant another."""

RESOURCES = ("workspaces", "api-keys", "webhooks", "entitlements", "seo", "mcp", "pixel")
ACTIONS = {
    "workspaces": ("read", "write", "delete"),
    "api-keys": ("read", "write", "delete"),
    "webhooks": ("read", "write", "delete"),
    "entitlements": ("read", "write"),
    "seo": ("read", "write"),
    "mcp": ("read", "write"),
    "pixel": ("read", "write", "delete"),  # the pixel's registered domains
}
ALL_SCOPES = tuple(f"{r}:{a}" for r in RESOURCES for a in ACTIONS[r])
WILDCARDS = ("*",) + tuple(f"{r}:*" for r in RESOURCES)
KNOWN = frozenset(ALL_SCOPES + WILDCARDS)
# The spec's "default: read, write": every read and write scope, no delete.
DEFAULT_KEY_SCOPES = tuple(s for s in ALL_SCOPES if not s.endswith(":delete"))


def grants(held: frozenset[str], required: str) -> bool:
    """True when `held` covers `required` (exactly, by `resource:*`, or by `*`)."""
    if required in held or "*" in held:
        return True
    resource, _, _ = required.partition(":")
    return f"{resource}:*" in held


def can_grant(held: frozenset[str], scope: str) -> bool:
    """A key may hand out only what it holds; a wildcard only if it holds that wildcard."""
    if scope == "*" or scope.endswith(":*"):
        return scope in held or "*" in held
    return grants(held, scope)
