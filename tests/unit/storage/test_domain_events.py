"""Subscription patterns and the event catalogue."""

from hypothesis import given
from hypothesis import strategies as st

from storage.postgres.domain_events import ACCOUNT, CATALOGUE, WORKSPACE, matches

NAMES = st.sampled_from(sorted(CATALOGUE))


@given(NAMES)
def test_star_and_an_exact_name_match(name):
    assert matches(["*"], name) and matches([name], name)


@given(NAMES)
def test_a_family_wildcard_matches_its_own_family_only(name):
    family = name.rsplit(".", 1)[0]
    assert matches([family + ".*"], name)
    assert not matches([family + "x.*"], name)


def test_wildcards_need_a_dot_boundary():
    assert matches(["seo.*"], "seo.report.created")
    assert not matches(["api.*"], "api_key.created")
    assert not matches(["workspace"], "workspace.created")
    assert not matches([], "workspace.created")


def test_the_catalogue_holds_the_issues_events_with_an_audience_each():
    required = {
        "workspace.created",
        "workspace.updated",
        "workspace.deleted",
        "api_key.created",
        "api_key.rotated",
        "api_key.revoked",
        "webhook.test",
        "seo.report.created",
        "entitlement.limit_reached",
    }
    assert required <= set(CATALOGUE)
    assert all(event.audience in (ACCOUNT, WORKSPACE) for event in CATALOGUE.values())
    assert {n for n, e in CATALOGUE.items() if e.audience == ACCOUNT} == {
        "workspace.created",
        "workspace.updated",
        "workspace.deleted",
    }
