"""Which claim serves a host (app/pixel/sites.py resolve): the rule alone, over made-up claims; and
a site's excluded paths (Site.excludes)."""

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.pixel.domains import EXCLUDED_PATH, EXCLUDED_PATH_MAX
from app.pixel.sites import Site, Unserved, resolve
from storage.postgres.domains import with_parents

ROOT = Path(__file__).resolve().parents[3]

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
        "session_timeout_minutes": 30,
        "honor_privacy_signals": True,
        "excluded_paths": [],
        "visitor_id_rotation": "daily",
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


# -- excluded paths ---------------------------------------------------------------------------


def site(*patterns: str) -> Site:
    return Site.from_row({**claim(1, "example.org"), "excluded_paths": list(patterns)})


@pytest.mark.parametrize(
    ("pattern", "path", "excluded"),
    [
        # `**` as a whole last segment: everything under it, and the path itself (our choice:
        # "/admin/**" means the admin section, /admin included).
        ("/admin/**", "/admin", True),
        ("/admin/**", "/admin/", True),
        ("/admin/**", "/admin/a/b", True),
        ("/admin/**", "/administrator", False),
        ("/admin/**", "/x/admin/a", False),
        # `*`: within one segment only (an empty segment too).
        ("/blog/*", "/blog/x", True),
        ("/blog/*", "/blog/", True),
        ("/blog/*", "/blog/x/y", False),
        ("/blog/*", "/blog", False),
        ("/*/edit", "/post-1/edit", True),
        ("/*/edit", "/a/b/edit", False),
        ("/*.html", "/index.html", True),
        ("/*.html", "/a/index.html", False),
        # `**` as a whole inner segment: any number of segments, none included.
        ("/shop/**/cart", "/shop/cart", True),
        ("/shop/**/cart", "/shop/eu/de/cart", True),
        ("/shop/**/cart", "/shop/eu/de/cart/x", False),
        # `**` inside a segment: anything, slashes included.
        ("/docs**", "/docs-v2/a/b", True),
        ("/**.pdf", "/files/2026/report.pdf", True),
        ("/**", "/", True),
        # Literal: a whole path, case and trailing slash as written.
        ("/checkout", "/checkout", True),
        ("/checkout", "/checkout/", False),
        ("/checkout", "/Checkout", False),
        ("/checkout", "/checkout/done", False),
        # Regex metacharacters and dots are literal.
        ("/a.b", "/a.b", True),
        ("/a.b", "/axb", False),
        ("/c++/(x)|[y]$^{2}", "/c++/(x)|[y]$^{2}", True),
        ("/c++", "/cc+", False),
        ("/v1\\d", "/v1\\d", True),
        ("/v1\\d", "/v12", False),
        ("/%7Euser/*", "/%7Euser/page", True),
        # Any path is answered: non-ASCII, and a lone surrogate (which UTF-8, RE2's input, cannot hold).
        ("/a/*", "/a/caf\u00e9", True),
        ("/a/*", "/a/\ud800", True),
        ("/a/*", "/b/\ud800", False),
    ],
)
def test_an_excluded_path_glob_matches_as_documented(pattern, path, excluded):
    assert site(pattern).excludes(path) is excluded


def test_a_site_without_excluded_paths_excludes_nothing_and_any_pattern_of_a_list_excludes():
    assert not site().excludes("/")
    several = site("/admin/**", "/preview/*", "/checkout")
    assert [several.excludes(p) for p in ("/admin/x", "/preview/1", "/checkout", "/products/1")] == [
        True,
        True,
        True,
        False,
    ]


def test_one_compiled_pattern_serves_every_site_with_the_same_list():
    assert site("/a/**", "/b").excluded is site("/a/**", "/b").excluded
    assert site("/a/**").excluded is not site("/b/**").excluded


def test_patterns_that_would_backtrack_are_matched_at_all():
    """Globs are the site owner's, paths anyone's: with Python's `re` this pair backtracks for far
    longer than a minute (a 2,000-character path took 1.5 s with one star fewer). Run in a child so
    that a regression shows as a timeout, not as a hung suite; the bound is not a speed target."""
    script = (
        "from tests.unit.app.test_sites import site\n"
        "nasty = site('/**a**a**a**a**b', '/*a*a*a*a*b', '/**/**/**/**/x')\n"
        "assert not nasty.excludes('/' + 'a' * 5000)\n"
        "assert not nasty.excludes('/a' * 2500)\n"
        "print('done')\n"
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "done", run.stderr[-2000:]


# Patterns the domain body accepts, without wildcards.
LITERAL = st.from_regex(EXCLUDED_PATH, fullmatch=True).filter(lambda p: "*" not in p and len(p) <= EXCLUDED_PATH_MAX)
ANY_PATTERN = st.from_regex(EXCLUDED_PATH, fullmatch=True).filter(lambda p: len(p) <= EXCLUDED_PATH_MAX)


@given(LITERAL)
def test_a_pattern_without_wildcards_matches_itself_and_nothing_longer(pattern):
    assert site(pattern).excludes(pattern)
    assert not site(pattern).excludes(pattern + "x")


@given(ANY_PATTERN, st.text(max_size=60))
def test_any_accepted_pattern_compiles_and_answers_for_any_path(pattern, path):
    assert site(pattern).excludes("/" + path) in (True, False)
    assert site(pattern, "/**").excludes("/" + path)
