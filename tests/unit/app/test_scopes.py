"""The scope rules: exact scopes, resource wildcards, `*`, and what a key may hand out."""

from app.access.scopes import ALL_SCOPES, can_grant, event_read_scope, grants
from storage.postgres.domain_events import CATALOGUE


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


def test_every_webhook_event_is_read_under_a_read_scope():
    """A new event family needs its read scope in EVENT_READ_SCOPES (else only `*` keys may hear it)."""
    for name in CATALOGUE:
        assert event_read_scope(name) in ALL_SCOPES and event_read_scope(name).endswith(":read"), name


def test_an_unlisted_event_family_needs_star():
    assert event_read_scope("post.created") == "*"
    assert not grants(frozenset(ALL_SCOPES), event_read_scope("post.created"))
