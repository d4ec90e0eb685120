"""The scope rules: exact scopes, resource wildcards, `*`, and what a key may hand out."""

from app.scopes import ALL_SCOPES, can_grant, grants


def test_exact_scope_grants_only_itself():
    held = frozenset({"workspaces:read"})
    assert grants(held, "workspaces:read")
    assert not grants(held, "workspaces:write")


def test_resource_wildcard_grants_every_action_of_that_resource_only():
    held = frozenset({"api-keys:*"})
    assert all(grants(held, s) for s in ALL_SCOPES if s.startswith("api-keys:"))
    assert not grants(held, "workspaces:read")


def test_star_grants_everything():
    assert all(grants(frozenset({"*"}), s) for s in ALL_SCOPES)


def test_wildcards_can_be_granted_only_by_their_holders():
    assert not can_grant(frozenset(ALL_SCOPES), "*")
    assert can_grant(frozenset({"*"}), "webhooks:*")
    assert not can_grant(frozenset({"webhooks:read", "webhooks:write"}), "webhooks:*")
