"""Pure listing arithmetic and links: unit tests and hypothesis properties."""

from urllib.parse import parse_qs, urlsplit

from hypothesis import given
from hypothesis import strategies as st

from app.http.listing import page_links, page_meta


def test_meta_of_middle_page():
    assert page_meta(2, 25, 60, 25) == {
        "current_page": 2,
        "from": 26,
        "last_page": 3,
        "per_page": 25,
        "to": 50,
        "total": 60,
    }


def test_meta_of_empty_listing():
    assert page_meta(1, 25, 0, 0) == {
        "current_page": 1,
        "from": None,
        "last_page": 1,
        "per_page": 25,
        "to": None,
        "total": 0,
    }


def test_links_keep_other_parameters_and_replace_page():
    links = page_links("https://api.example.com/api/v1/workspaces", {"sort": ["-name"], "page": ["2"]}, 2, 3)
    assert links["next"] == "https://api.example.com/api/v1/workspaces?sort=-name&page=3"
    assert links["prev"] == "https://api.example.com/api/v1/workspaces?sort=-name&page=1"
    assert links["first"].endswith("page=1") and links["last"].endswith("page=3")


@given(total=st.integers(0, 10_000), per_page=st.integers(1, 100), page=st.integers(1, 200))
def test_meta_is_consistent_with_the_rows_a_page_holds(total, per_page, page):
    shown = max(0, min(per_page, total - (page - 1) * per_page))
    meta = page_meta(page, per_page, total, shown)
    assert meta["last_page"] == max(1, -(-total // per_page))
    if shown:
        assert meta["to"] - meta["from"] + 1 == shown
        assert meta["from"] == (page - 1) * per_page + 1
        assert meta["to"] <= total
    else:
        assert meta["from"] is None and meta["to"] is None
        assert page > meta["last_page"] or total == 0


@given(
    page=st.integers(1, 50),
    last=st.integers(1, 50),
    params=st.dictionaries(
        st.text("abcxyz_", min_size=1, max_size=5).filter(lambda k: k != "page"),
        st.lists(st.text(max_size=8), min_size=1, max_size=2),
        max_size=3,
    ),
)
def test_links_preserve_every_other_parameter(page, last, params):
    links = page_links("http://h/x", {**params, "page": [str(page)]}, page, last)
    for name, url in links.items():
        if url is None:
            assert (name == "prev" and page == 1) or (name == "next" and page >= last)
            continue
        query = parse_qs(urlsplit(url).query, keep_blank_values=True)
        for key, values in params.items():
            assert query[key] == values
        assert len(query["page"]) == 1
