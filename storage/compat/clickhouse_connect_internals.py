"""clickhouse-connect's private internals, as the ClickHouse writer (storage/clickhouse/writer.py)
uses them.

Talks to no service: it only tells which backend a client drives.
Contract test: tests/integration/storage/compat/test_clickhouse_connect_internals.py (real chdb).
"""

VERIFIED = {"clickhouse-connect": "1.12.0"}
# The class get_client returns for chdb://, defined in the private clickhouse_connect.driver._chdbclient.
CHDB_CLIENT_CLASS = "ChdbClient"


def is_embedded(client) -> bool:
    """Whether `client` runs chdb in this process (not a ClickHouse server over HTTP).

    Relies on the class name of `clickhouse_connect.driver._chdbclient.ChdbClient`
    (clickhouse-connect 1.12.0), compared by name so that a server deployment never imports
    chdb. If it is renamed, this answers False: inserts stay correct but join each batch into
    one bytes object first (~75 MB per 100k rows) instead of streaming its parts.
    """
    return type(client).__name__ == CHDB_CLIENT_CLASS
