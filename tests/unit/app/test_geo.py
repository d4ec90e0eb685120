"""Geography of a pixel event: the built-in country database, an .mmdb file, CDN headers."""

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.pixel.geo import NOWHERE, Geo, Location, cdn_location, country_code, place, region_code
from storage.config import ConfigError
from tests.geo_fixture import build_city_db, build_db, city_record

# Registries' own addresses: registered where the registry sits, and not about to move.
REGISTRY_ADDRESSES = [
    ("193.0.6.139", "NL"),  # RIPE NCC, Amsterdam
    ("2001:67c:2e8:22::c100:68b", "NL"),  # RIPE NCC over IPv6
    ("::ffff:193.0.6.139", "NL"),  # the same, as an IPv6 socket sees an IPv4 client
    ("202.12.29.205", "AU"),  # APNIC, Brisbane
    ("196.216.2.6", "ZA"),  # AFRINIC
    ("200.3.14.10", "UY"),  # LACNIC, Montevideo
    ("8.8.8.8", "US"),  # ARIN region
]
NOT_PUBLIC = [
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "127.0.0.1",
    "169.254.1.1",
    "100.64.0.1",
    "0.0.0.0",
    "255.255.255.255",
    "224.0.0.1",
    "192.0.2.1",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "ff02::1",
]
GARBAGE = ["", "garbage", "1.2.3", "999.1.1.1", " 8.8.8.8", "8.8.8.8 ", "1.1.1.1\x00", "::ffff:", "::ffff:1.2", "g::1"]
FIXTURE_PLACES = [
    ("192.0.2.7", Location("DE", "DE-BY", "Munich")),
    ("198.51.100.255", Location("US", "US-CA", "San Francisco")),
    ("203.0.113.0", Location("JP", "JP-13", "Tokyo")),
    ("2001:db8:1234::1", Location("FR", "FR-IDF", "Paris")),
    ("::ffff:192.0.2.7", Location("DE", "DE-BY", "Munich")),
    ("192.0.3.1", NOWHERE),
    ("2001:db9::1", NOWHERE),
    ("8.8.8.8", NOWHERE),
    ("10.0.0.1", NOWHERE),
]


@pytest.fixture(scope="module")
def builtin():
    geo = Geo(None)
    yield geo
    geo.close()


@pytest.fixture(scope="module")
def city_db(tmp_path_factory) -> Path:
    return build_city_db(tmp_path_factory.mktemp("geo") / "city.mmdb")


@pytest.fixture(scope="module")
def from_file(city_db):
    geo = Geo(city_db)
    yield geo
    geo.close()


@pytest.mark.parametrize(("address", "country"), REGISTRY_ADDRESSES)
def test_builtin_database_gives_the_country_of_public_addresses(builtin, address, country):
    assert builtin.locate(address) == Location(country)


@pytest.mark.parametrize("address", NOT_PUBLIC + GARBAGE)
def test_builtin_database_places_private_reserved_and_malformed_addresses_nowhere(builtin, address):
    assert builtin.locate(address) is NOWHERE


@pytest.mark.parametrize(("address", "expected"), FIXTURE_PLACES)
def test_mmdb_file_gives_country_region_and_city(from_file, address, expected):
    assert from_file.locate(address) == expected


@pytest.mark.parametrize("address", GARBAGE)
def test_mmdb_file_places_malformed_addresses_nowhere(from_file, address):
    assert from_file.locate(address) is NOWHERE


@given(st.text())
def test_builtin_locate_never_raises_and_gives_a_country_or_nothing(builtin, text):
    found = builtin.locate(text)
    assert found.region == found.city == ""
    assert found.country == "" or country_code(found.country) == found.country


@given(st.one_of(st.text(), st.ip_addresses().map(str)))
def test_mmdb_locate_never_raises(from_file, text):
    assert from_file.locate(text) in {place for _, place in FIXTURE_PLACES}


def test_locate_after_close_does_not_raise(city_db):
    geo = Geo(city_db)
    geo.close()
    assert geo.locate("192.0.2.7") is NOWHERE


def test_missing_database_is_a_config_error_naming_the_path(tmp_path):
    missing = tmp_path / "GeoLite2-City.mmdb"
    with pytest.raises(ConfigError, match=f"SLUICE_GEOIP_DB.*{missing}"):
        Geo(missing)


def test_a_file_that_is_no_mmdb_is_a_config_error(tmp_path):
    junk = tmp_path / "junk.mmdb"
    junk.write_bytes(b"not a MaxMind database" * 100)
    with pytest.raises(ConfigError, match=str(junk)):
        Geo(junk)


def test_an_asn_database_is_refused(tmp_path):
    asn = build_db(tmp_path / "asn.mmdb", {"192.0.2.0/24": {"autonomous_system_number": 64496}}, "GeoLite2-ASN")
    with pytest.raises(ConfigError, match="GeoLite2-ASN"):
        Geo(asn)


def test_flat_layout_of_ip_location_db_files(tmp_path):
    flat = build_db(tmp_path / "flat.mmdb", {"192.0.2.0/24": {"country_code": "ch", "city": "Zürich", "state1": "ZH"}})
    geo = Geo(flat)
    assert geo.locate("192.0.2.1") == Location("CH", "", "Zürich")
    geo.close()


RECORDS = [
    (city_record("DE", "BY", "Munich"), Location("DE", "DE-BY", "Munich")),
    ({"country": {"iso_code": "NL"}, "subdivisions": [{"names": {"en": "North Holland"}}]}, Location("NL")),
    ({"registered_country": {"iso_code": "SE"}}, Location("SE")),  # GeoLite2 without `country`
    ({"country": {"iso_code": "EU"}}, NOWHERE),
    ({"country": {"iso_code": 7}, "city": {"names": {"en": "Nowhere"}}}, NOWHERE),
    ({"country": {"iso_code": "US"}, "subdivisions": [{"iso_code": "California"}]}, Location("US")),
    ({"country": {"iso_code": "US"}, "subdivisions": "CA", "city": {"names": {"en": "X" * 101}}}, Location("US")),
    ({"country_code": "XX"}, NOWHERE),
    ("a string", NOWHERE),
    (None, NOWHERE),
]


@pytest.mark.parametrize(("record", "expected"), RECORDS)
def test_place_reads_what_it_can_from_a_record(record, expected):
    assert place(record) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("DE", "DE"), ("de", "DE"), (" us ", "US"), ("XX", ""), ("T1", ""), ("ZZ", ""), ("EU", ""), ("AP", ""),
     ("QM", ""), ("XA", ""), ("XK", "XK"), ("", ""), ("USA", ""), ("D", ""), ("1A", ""), ("ß", ""), ("ﬀ", "")],
)  # fmt: skip
def test_country_code_keeps_only_iso_country_codes(text, expected):
    assert country_code(text) == expected


@pytest.mark.parametrize(
    ("country", "subdivision", "expected"),
    [("US", "CA", "US-CA"), ("US", "ca", "US-CA"), ("US", "US-CA", "US-CA"), ("JP", "13", "JP-13"),
     ("FR", "IDF", "FR-IDF"), ("US", "", ""), ("", "CA", ""), ("US", "California", ""), ("US", "C-A", ""),
     ("DE", "ß", "")],
)  # fmt: skip
def test_region_code_is_iso_3166_2(country, subdivision, expected):
    assert region_code(country, subdivision) == expected


CLOUDFLARE = {b"cf-ipcountry": b"DE", b"cf-region-code": b"BY", b"cf-ipcity": "München".encode()}
CDN_CASES = [
    ("cloudflare", CLOUDFLARE, Location("DE", "DE-BY", "München")),
    ("cloudflare lowercase", {b"cf-ipcountry": b"de", b"cf-region-code": b"by"}, Location("DE", "DE-BY")),
    ("cloudflare country only", {b"cf-ipcountry": b"NL"}, Location("NL")),
    ("cloudflare unknown", {b"cf-ipcountry": b"XX", b"cf-ipcity": b"Berlin"}, None),
    ("cloudflare tor", {b"cf-ipcountry": b"T1"}, None),
    ("cloudflare empty", {b"cf-ipcountry": b""}, None),
    ("cloudflare three letters", {b"cf-ipcountry": b"DEU"}, None),
    ("cloudflare not ascii", {b"cf-ipcountry": "ß".encode()}, None),
    ("cloudflare bad region", {b"cf-ipcountry": b"US", b"cf-region-code": b"Texas"}, Location("US")),
    ("cloudflare control in city", {b"cf-ipcountry": b"US", b"cf-ipcity": b"Aus\ntin"}, Location("US")),
    (
        "cloudfront",
        {
            b"cloudfront-viewer-country": b"JP",
            b"cloudfront-viewer-country-region": b"13",
            b"cloudfront-viewer-city": b"Tokyo",
        },
        Location("JP", "JP-13", "Tokyo"),
    ),
    (
        "cloudfront percent-encoded",
        {b"cloudfront-viewer-country": b"US", b"cloudfront-viewer-city": b"San%20Francisco"},
        Location("US", "", "San Francisco"),
    ),
    (
        "vercel",
        {b"x-vercel-ip-country": b"DE", b"x-vercel-ip-country-region": b"BY", b"x-vercel-ip-city": b"M%C3%BCnchen"},
        Location("DE", "DE-BY", "München"),
    ),
    ("vercel unknown", {b"x-vercel-ip-country": b"XX"}, None),
    (
        "akamai",
        {b"x-akamai-edgescape": b"georegion=246,country_code=US,region_code=CA,city=SANFRANCISCO,dma=807"},
        Location("US", "US-CA"),
    ),
    ("akamai without country", {b"x-akamai-edgescape": b"georegion=246,city=SANFRANCISCO"}, None),
    ("no cdn", {b"x-forwarded-for": b"203.0.113.7"}, None),
    ("region without country", {b"cf-region-code": b"BY", b"cf-ipcity": b"Munich"}, None),
    ("first cdn decides", {b"cf-ipcountry": b"XX", b"x-vercel-ip-country": b"US"}, None),
    ("first cdn wins", {b"cf-ipcountry": b"FR", b"cloudfront-viewer-country": b"DE"}, Location("FR")),
]


@pytest.mark.parametrize(("headers", "expected"), [case[1:] for case in CDN_CASES], ids=[c[0] for c in CDN_CASES])
def test_cdn_location_from_headers(headers, expected):
    assert cdn_location(headers.get) == expected


def test_cdn_location_looks_only_at_the_cdns_named():
    headers = {b"cf-ipcountry": b"FR", b"cloudfront-viewer-country": b"DE"}
    assert cdn_location(headers.get, ("cloudfront",)) == Location("DE")
    assert cdn_location(headers.get, ("vercel", "akamai")) is None


@given(st.dictionaries(st.sampled_from([b"cf-ipcountry", b"cf-region-code", b"cf-ipcity"]), st.binary(max_size=40)))
def test_cdn_location_never_raises_and_keeps_only_codes(headers):
    found = cdn_location(headers.get)
    assert found is None or (country_code(found.country) == found.country != "")
    assert found is None or found.region in ("", region_code(found.country, found.region))
