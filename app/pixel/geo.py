"""Pixel enrichment: where a client is, as a Location (country, region, city).

app/pixel/intake.py asks here once per request, before the address is thrown away (enrichment.py
stores only its prefix and a keyed hash): a trusted CDN's own lookup (cdn_location) first, else
Geo.locate on the client's address. Two databases stand behind Geo, one at a time:

- Built in, no download: iptocc (PyPI, MIT OR Apache-2.0), country only. Its tables are the five
  Regional Internet Registries' delegated statistics (NRO, CC BY 4.0: "IP country data: NRO"),
  compiled into the wheel and republished whenever the nightly refresh changes them; a lookup costs
  ~0.1 µs. They give the country a block is registered to, not where it is used: on a random IPv4
  sample 90% agree with DB-IP's geolocation. Passed over: Debian's geoip-database (legacy .dat
  format, 2019 data); npm's @ip-location-db/*-mmdb (whose README retires the npm releases over
  known data bugs, last published June 2026, and npm is no dependency of ours); python-geoacumen
  (.mmdb of June 2024, pins maxminddb 1.5.4); plevin-db-country (own format, sources under mixed
  licences).
- SLUICE_GEOIP_DB: a MaxMind-format .mmdb for region and city (GeoLite2-City or -Country, DB-IP
  City Lite, ip-location-db's flat files), read with MaxMind's maxminddb (C extension). GeoLite2
  may not be redistributed, so the operator brings the file. Region needs subdivision ISO codes,
  which GeoLite2 has; DB-IP City Lite names its subdivisions only, so with it region stays "".

Lookups are memoised per address: the same clients come back all day. Ours is only the mapping
from each source's record or headers to ISO codes, and the checks on what a CDN sends.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import iptocc
import maxminddb

from storage.config import ConfigError

# Distinct client addresses a busy process sees in minutes at 3,500 req/s; ~200 bytes an entry.
CACHE_SIZE = 16_384
# CDN header triples repeat (a few thousand cities); Akamai's carries coordinates, so fewer repeat.
HEADER_CACHE_SIZE = 4096
CITY_MAX = 100  # longer is not a city name
# ISO 3166-1 alpha-2, less the codes that name no country: user-assigned (AA, QM-QZ, XA-XZ, ZZ;
# Cloudflare's XX is one) and the reserved EU, AP, UN that registries and CDNs use for regions.
# XK stays: MaxMind, DB-IP and the CDNs give Kosovo that user-assigned code.
COUNTRY = re.compile(r"(?!AA|ZZ|EU|AP|UN|Q[M-Z]|X[A-JL-Z])[A-Z]{2}")
SUBDIVISION = re.compile(r"[A-Z0-9]{1,3}")  # the part of an ISO 3166-2 code after "CC-"
# .mmdb files that open but hold no place (MaxMind's and DB-IP's type names).
NOT_GEOGRAPHY = re.compile(r"ASN|ISP|Anonymous|Connection-Type|Domain", re.IGNORECASE)
MAPPED = "::ffff:"  # an IPv4 client seen through an IPv6 socket


@dataclass(frozen=True, slots=True)
class Location:
    country: str = ""  # ISO 3166-1 alpha-2 or ""
    region: str = ""  # ISO 3166-2, e.g. "US-CA", or ""
    city: str = ""


NOWHERE = Location()

HeaderGetter = Callable[[bytes], bytes | None]


def country_code(text: str) -> str:
    """An ISO 3166-1 alpha-2 country code, uppercased; "" for anything else."""
    if not text.isascii():  # before upper(), which turns "ß" into "SS"
        return ""
    code = text.strip().upper()
    return code if COUNTRY.fullmatch(code) else ""


def region_code(country: str, subdivision: str) -> str:
    """The ISO 3166-2 code, "US-CA" from ("US", "CA") or ("US", "US-CA"); "" if there is none to make."""
    if not (country and subdivision.isascii()):
        return ""
    code = subdivision.strip().upper()
    if code.startswith(f"{country}-"):
        code = code[len(country) + 1 :]
    return f"{country}-{code}" if SUBDIVISION.fullmatch(code) else ""


def city_name(text: str) -> str:
    name = text.strip()
    return name if len(name) <= CITY_MAX and name.isprintable() else ""


class Geo:
    """Address → Location from the built-in country database, or from the .mmdb at `database`."""

    def __init__(self, database: Path | None):
        self._reader = None if database is None else _open(database)
        find = _find_country if self._reader is None else self._find_in_file
        self._locate = lru_cache(maxsize=CACHE_SIZE)(find)

    def locate(self, address: str) -> Location:
        """Never raises: private, loopback, unknown and malformed addresses are NOWHERE."""
        return self._locate(address)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._locate.cache_clear()

    def _find_in_file(self, address: str) -> Location:
        assert self._reader is not None
        try:
            return place(self._reader.get(_unmapped(address)))
        # Not an address (TypeError: one with a NUL in it), or a closed or corrupt file.
        except (ValueError, TypeError, maxminddb.InvalidDatabaseError):
            return NOWHERE


def _open(path: Path) -> maxminddb.Reader:
    try:
        reader = maxminddb.open_database(path, maxminddb.MODE_AUTO)
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
        raise ConfigError(f"SLUICE_GEOIP_DB: cannot read {path} as a MaxMind-format .mmdb ({exc})") from exc
    kind = reader.metadata().database_type
    if NOT_GEOGRAPHY.search(kind):
        reader.close()
        raise ConfigError(f"SLUICE_GEOIP_DB: {path} is a {kind} database, which holds no country or city")
    return reader


def _unmapped(address: str) -> str:
    if not address.startswith(":"):  # the common case, at no cost
        return address
    return address[len(MAPPED) :] if address[: len(MAPPED)].lower() == MAPPED and "." in address else address


def _find_country(address: str) -> Location:
    code = iptocc.country_code(_unmapped(address))  # None for reserved ranges and for non-addresses
    return _country_location(code) if code else NOWHERE


@lru_cache(maxsize=512)
def _country_location(code: str) -> Location:
    # One Location per country: building and checking one costs more than the lookup itself.
    country = country_code(code)
    return Location(country) if country else NOWHERE


def place(record: Any) -> Location:
    """The Location in an .mmdb record: GeoLite2/DB-IP's nested layout or ip-location-db's flat one."""
    if not isinstance(record, dict):
        return NOWHERE
    if "country_code" in record:
        country = country_code(_text(record["country_code"]))
        return Location(country, "", city_name(_text(record.get("city")))) if country else NOWHERE
    country = country_code(_text(_field(record, "country", "iso_code")))
    # GeoLite2 leaves `country` out where it has only the block's registration (anycast, satellites).
    country = country or country_code(_text(_field(record, "registered_country", "iso_code")))
    if not country:
        return NOWHERE
    subdivisions = record.get("subdivisions")
    first = subdivisions[0] if isinstance(subdivisions, list) and subdivisions else {}
    region = region_code(country, _text(_field(first, "iso_code")))
    return Location(country, region, city_name(_text(_field(record, "city", "names", "en"))))


def _field(record: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(record, dict):
            return None
        record = record.get(key)
    return record


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


# -- CDN headers -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cdn:
    """The request headers a CDN adds with its own lookup of the visitor (lowercase names)."""

    country: bytes
    region: bytes  # the ISO 3166-2 subdivision code without its country ("CA", "13")
    city: bytes
    percent_encoded: bool  # the city is URL-encoded (RFC 3986); else raw UTF-8


CDNS = {
    # Cloudflare: CF-IPCountry with IP Geolocation on; region and city with the "Add visitor
    # location headers" Managed Transform, non-ASCII sent as UTF-8.
    "cloudflare": Cdn(b"cf-ipcountry", b"cf-region-code", b"cf-ipcity", percent_encoded=False),
    # CloudFront: the viewer-location headers of an origin request policy.
    "cloudfront": Cdn(
        b"cloudfront-viewer-country", b"cloudfront-viewer-country-region", b"cloudfront-viewer-city", True
    ),
    "vercel": Cdn(b"x-vercel-ip-country", b"x-vercel-ip-country-region", b"x-vercel-ip-city", percent_encoded=True),
}
# Akamai's EdgeScape: "georegion=246,country_code=US,region_code=CA,city=SANFRANCISCO,...". Its
# cities are uppercased without spaces, unlike every other source, so only the codes are taken.
# Fastly sends no geography header of its own (a VCL snippet can, under any name).
EDGESCAPE = b"x-akamai-edgescape"
ALL_CDNS = (*CDNS, "akamai")


def cdn_location(headers: HeaderGetter, cdns: tuple[str, ...] = ALL_CDNS) -> Location | None:
    """From the first CDN's headers present; None when none is present or usable.

    Call it only for requests from a trusted proxy. A CDN passes on the headers it does not set
    itself, so behind CloudFront a client's own CF-IPCountry would come first: `cdns` (names of
    ALL_CDNS) narrows the look to the CDN in use. The first CDN with a country header decides,
    usable or not ("XX", "T1": None, and the caller looks the address up).
    """
    for name in cdns:
        if name == "akamai":
            edgescape = headers(EDGESCAPE)
            if edgescape is not None:
                return _edgescape_place(edgescape)
            continue
        cdn = CDNS[name]
        country = headers(cdn.country)
        if country is not None:
            return _cdn_place(country, headers(cdn.region) or b"", headers(cdn.city) or b"", cdn.percent_encoded)
    return None


@lru_cache(maxsize=HEADER_CACHE_SIZE)
def _cdn_place(country: bytes, region: bytes, city: bytes, percent_encoded: bool) -> Location | None:
    code = country_code(country.decode("latin-1"))
    if not code:
        return None
    name = city.decode("utf-8", "replace")
    if percent_encoded and "%" in name:
        name = unquote(name)
    return Location(code, region_code(code, region.decode("latin-1")), city_name(name))


@lru_cache(maxsize=HEADER_CACHE_SIZE)
def _edgescape_place(header: bytes) -> Location | None:
    fields = {}
    for item in header.decode("latin-1").split(","):
        key, _, value = item.partition("=")
        fields[key.strip()] = value
    code = country_code(fields.get("country_code", ""))
    return Location(code, region_code(code, fields.get("region_code", ""))) if code else None
