"""The scope catalogue and the one function that decides whether scopes grant another."""

RESOURCES = ("workspaces", "api-keys", "webhooks", "entitlements", "seo", "mcp", "pixel", "stats")
ACTIONS = {
    "workspaces": ("read", "write", "delete"),
    "api-keys": ("read", "write", "delete"),
    "webhooks": ("read", "write", "delete"),
    "entitlements": ("read", "write"),
    "seo": ("read", "write"),
    "mcp": ("read", "write"),
    "pixel": ("read", "write", "delete"),  # the pixel's registered domains
    "stats": ("read",),  # the Stats API over the workspace's sites
}
ALL_SCOPES = tuple(f"{r}:{a}" for r in RESOURCES for a in ACTIONS[r])
WILDCARDS = ("*",) + tuple(f"{r}:*" for r in RESOURCES)
KNOWN = frozenset(ALL_SCOPES + WILDCARDS)
# The spec's "default: read, write": every read and write scope, no delete.
DEFAULT_KEY_SCOPES = tuple(s for s in ALL_SCOPES if not s.endswith(":delete"))
# A webhook event carries data the API shows only under a read scope, so an endpoint may be
# subscribed to it (or pointed elsewhere) only by a key holding that scope. By event family.
EVENT_READ_SCOPES = {
    "workspace": "workspaces:read",
    "api_key": "api-keys:read",
    "webhook": "webhooks:read",
    "seo": "seo:read",
    "entitlement": "entitlements:read",
    "pixel_domain": "pixel:read",
}


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


def event_read_scope(event_type: str) -> str:
    """The scope that reads what an event carries; a family not listed above needs `*` (fails closed)."""
    return EVENT_READ_SCOPES.get(event_type.partition(".")[0], "*")
