"""Which claim serves a host (app/pixel/sites.py resolve): the rule alone, over made-up claims."""

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from app.pixel.sites import Site, Unserved, resolve
from storage.postgres.domains import with_parents

NOW = datetime(2026, 1, 15, tzinfo=UTC)
HOSTS = ("example.com", "www.example.com", "shop.example.com", "a.shop.example.com", "www.shop.example.com")


def claim(workspace_id: int, host: str, verified: bool = False) -> dict:
    return {
        "id": hash((workspace_id, host)) % 10**6,
        "workspace_id": workspace_id,
        "host": host,
        "enabled": True,
        "pageviews": True,
        "events": True,
        "sessions": True,
        "sample_rate": 1.0,
        "verified_at": NOW if verified else None,
    }


def answer(host: str, *claims: dict):
    """resolve() over the claims storage would return for host: those on host and its parents."""
    names = with_parents(host)
    return resolve(host, [c for c in claims if c["host"] in names])


def owner(result) -> int | Unserved:
    return result.workspace_id if isinstance(result, Site) else result


def test_parents_stop_at_the_registrable_domain():
    assert with_parents("a.b.example.com") == ["a.b.example.com", "b.example.com", "example.com"]
    assert with_parents("www.shop.example.co.uk") == ["www.shop.example.co.uk", "shop.example.co.uk", "example.co.uk"]
    assert with_parents("me.github.io") == ["me.github.io"]
    assert with_parents("localhost") == ["localhost"]


def test_a_www_claim_of_another_workspace_contests_the_www_host_and_leaves_the_apex():
    claims = (claim(1, "example.com"), claim(2, "www.example.com"))
    assert owner(answer("www.example.com", *claims)) is Unserved.CONTESTED
    assert owner(answer("example.com", *claims)) == 1


def test_an_unverified_claim_serves_its_www_form_but_no_other_subdomain():
    assert owner(answer("www.example.com", claim(1, "example.com"))) == 1
    assert owner(answer("shop.example.com", claim(1, "example.com"))) is Unserved.UNKNOWN


def test_the_deepest_verified_claim_wins_and_the_owners_deepest_claim_configures():
    claims = (
        claim(1, "example.com", verified=True),
        claim(1, "shop.example.com"),
        claim(2, "www.example.com"),
        claim(3, "a.shop.example.com", verified=True),
    )
    assert owner(answer("www.example.com", *claims)) == 1
    served = answer("www.shop.example.com", *claims)
    assert (served.workspace_id, served.host) == (1, "shop.example.com")
    assert owner(answer("x.a.shop.example.com", *claims)) == 3


@given(
    st.lists(st.tuples(st.integers(1, 3), st.sampled_from(HOSTS), st.booleans()), max_size=8),
    st.sampled_from(HOSTS + ("x.www.example.com",)),
)
def test_an_unverified_claim_never_serves_a_host_another_workspace_claims(raw, host):
    claims, seen = [], set()
    for workspace_id, claimed, verified in raw:
        taken = any(c["host"] == claimed and c["verified_at"] for c in claims)
        if (workspace_id, claimed) in seen or verified and taken:
            continue  # one claim per workspace and host; one verified claim per host
        seen.add((workspace_id, claimed))
        claims.append(claim(workspace_id, claimed, verified))
    result = answer(host, *claims)
    relevant = [c for c in claims if c["host"] in with_parents(host)]
    if isinstance(result, Site) and not any(c["verified_at"] for c in relevant):
        assert {c["workspace_id"] for c in relevant} == {result.workspace_id}
    if any(c["verified_at"] for c in relevant):
        deepest = max((c for c in relevant if c["verified_at"]), key=lambda c: len(c["host"]))
        assert owner(result) == deepest["workspace_id"]
