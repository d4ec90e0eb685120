"""Every use of a third-party library's private internals, one module per library.

Sluice leans on a few names its libraries do not promise to keep (a partitioner, a parser, a
connection pool), each for a measured reason. Each is reached only through the small functions
of `<library>_internals.py` here, whose docstrings say which private name they rely on, the
version it was checked against (`VERIFIED`), and what breaks if it changes. Each module has a
contract test (tests/{unit,integration}/storage/compat/) that exercises the functions against
the real library, so an upgrade breaks one named test instead of production.

The package lives in storage/, the lowest layer, so that app/ and ingest/ may both import it;
it imports nothing of Sluice.
"""
