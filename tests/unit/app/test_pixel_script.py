"""What the API serves as the tracking script: app/pixel/pixel.js built by app/pixel/script.py, and
no more than its size budget. What the script does is proven in a real browser (tests/browser)."""

import gzip
import re

import pytest

from app.pixel.script import BUDGET_GZIPPED, GZIPPED_BYTES, SOURCE_PATH, build
from tests.unit.app.test_pixel_http import api  # noqa: F401 (the in-process application fixture)

PATHS = ["/pixel.js", "/api/v1/pixel/pixel.js"]


@pytest.mark.parametrize("path", PATHS)
async def test_the_served_script_is_the_source_in_the_repo_built(api, path):  # noqa: F811
    client, _, _ = api
    r = await client.get(path)
    assert r.status == 200
    assert r.content_type().startswith(b"application/javascript")
    served = await r.read()
    assert served == build(SOURCE_PATH.read_text())
    # Built: no comment and no indentation left, local names shortened, what the page names kept.
    assert b"/*" not in served and b"\n  " not in served and b"sampleKey" not in served
    for kept in (b"sluice", b'"data-"', b"sendBeacon", b'"text/plain"', b"/api/v1/pixel"):
        assert kept in served
    assert r.headers.get_first(b"Access-Control-Allow-Origin") == b"*"


def test_a_page_pays_at_most_the_budget_for_it():
    served = build(SOURCE_PATH.read_text())
    assert len(gzip.compress(served, 9)) == GZIPPED_BYTES <= BUDGET_GZIPPED == 2500


def test_the_readme_states_the_size_it_is():
    readme = (SOURCE_PATH.parents[2] / "README.md").read_text()
    stated = re.search(r"pixel\.js is ([0-9.]+) KB gzipped", readme)
    assert stated, "README's pixel section says how big the script is"
    assert float(stated.group(1)) == round(GZIPPED_BYTES / 1000, 1)


def test_a_script_a_browser_of_the_time_could_not_run_is_refused_at_build():
    with pytest.raises(Exception, match="Unexpected|Illegal|ECMA"):
        build("const f = (a) => a;")
