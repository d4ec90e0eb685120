"""Small .mmdb files for the geography tests, written with mmdb-writer (MaxMind DB format 2.0).

Only documentation ranges (RFC 5737, RFC 3849), so no answer depends on a real database.
"""

from pathlib import Path
from typing import Any

from mmdb_writer import MMDBWriter
from netaddr import IPSet  # type: ignore[import-untyped]  # mmdb-writer takes only its IPSet

# network → (country, subdivision, city), in the record layout of GeoLite2-City and DB-IP City Lite.
CITIES = {
    "192.0.2.0/24": ("DE", "BY", "Munich"),  # TEST-NET-1
    "198.51.100.0/24": ("US", "CA", "San Francisco"),  # TEST-NET-2
    "203.0.113.0/24": ("JP", "13", "Tokyo"),  # TEST-NET-3
    "2001:db8::/32": ("FR", "IDF", "Paris"),
}


def city_record(country: str, subdivision: str, city: str) -> dict[str, Any]:
    return {
        "city": {"geoname_id": 1, "names": {"en": city, "de": city}},
        "country": {"iso_code": country, "names": {"en": country}},
        "subdivisions": [{"iso_code": subdivision, "names": {"en": subdivision}}],
        "location": {"latitude": 0.0, "longitude": 0.0},
    }


def build_db(path: Path, records: dict[str, dict[str, Any]], database_type: str = "Sluice-Test-City") -> Path:
    """An IPv6 database (IPv4 mapped in) holding `records` by network."""
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type=database_type, languages=["en"])
    for network, record in records.items():
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))
    return path


def build_city_db(path: Path) -> Path:
    return build_db(path, {network: city_record(*place) for network, place in CITIES.items()})
