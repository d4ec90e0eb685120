"""The OpenAPI document is the contract, checked by tools nobody here wrote.

- schemathesis (an independent fuzzer) reads /openapi.json and attacks every operation with every
  check and every phase, stateful included, on a server of its own (a fresh database, a throwaway
  workspace whose key it may revoke): it must report 0 failures.
- openapi-python-client generates a typed client from /openapi.json, which then drives README's
  walk-through with typed models.

`make contract` runs this file alone; README shows the schemathesis command it runs.
"""

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, Tenants, fresh_database, running_api

VENV_BIN = Path(sys.executable).parent
# Enough examples per operation to walk every declared limit; a fixed seed keeps CI's run the same
# run (SLUICE_CONTRACT_SEED=random for a new one, as `make contract` does).
MAX_EXAMPLES = int(os.environ.get("SLUICE_CONTRACT_EXAMPLES", "40"))
SEED = os.environ.get("SLUICE_CONTRACT_SEED", "20261202")
FUZZ_TIMEOUT = 900


@pytest.fixture(scope="module")
def contract_api(server_env, ingest_worker, tmp_path_factory):
    """An API server on a database of its own: the fuzzer creates, changes and deletes freely
    (pixel domains included) without touching what other tests registered. The run's ingest
    worker serves its ClickHouse queries (the analytics tools); its workspace ids, far from
    every other database's, keep its events apart."""
    with fresh_database(os.environ["DATABASE_URL"], "sluice_contract") as dsn:
        # Concurrent test runs share 127.0.0.1's pixel budget: this server's is out of their reach.
        env = {**server_env, "DATABASE_URL": dsn, "SLUICE_PIXEL_RATE_LIMIT": "1000000"}
        with running_api(env, tmp_path_factory.mktemp("contract")) as url:
            yield url, Tenants(dsn)


def schemathesis_command(url: str, key: str) -> list[str]:
    seed = [] if SEED == "random" else ["--seed", SEED]
    return [
        str(VENV_BIN / "schemathesis"),
        "--config-file",
        str(ROOT / "schemathesis.toml"),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        *seed,
        "--header",
        f"Authorization: Bearer {key}",
    ]


def test_schemathesis_finds_no_failure_in_any_operation(contract_api):
    url, tenants = contract_api
    # Its key's id is far from the small ids a fuzzer tries first: it should not revoke itself at
    # the first example (it may later, by a link from a key it created: then it gets 401s).
    tenants.execute("SELECT setval('api_keys_id_seq', 1000000 + (random() * 1000000)::bigint)")
    workspace = tenants.workspace("schemathesis", tier="enterprise")
    key = tenants.key(workspace["id"])
    command = schemathesis_command(url, key)
    env = {**os.environ, "NO_COLOR": "1", "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=FUZZ_TIMEOUT)
    report = done.stdout + done.stderr
    assert done.returncode == 0, f"schemathesis found failures (exit {done.returncode}):\n{report[-20000:]}"
    selected = re.search(r"Selected: (\d+)/(\d+)", report)
    tested = re.search(r"Tested: (\d+)", report)
    assert selected and tested, report[-5000:]
    # Every operation of the document was selected and ran, none skipped.
    assert selected[1] == selected[2] == tested[1], report[-5000:]


@pytest.fixture(scope="module")
def generated_client(contract_api, tmp_path_factory):
    """The `sluice_api_client` package openapi-python-client generates from the served document."""
    url, _ = contract_api
    out = tmp_path_factory.mktemp("client")
    spec = out / "openapi.json"
    spec.write_bytes(httpx.get(url + "/openapi.json", timeout=10).raise_for_status().content)
    config = out / "config.yaml"
    # literal_enums: enums as Literal types (time zone names such as GMT0 and GMT-0 would clash as Enum members).
    config.write_text(
        "project_name_override: sluice-api-client\npackage_name_override: sluice_api_client\nliteral_enums: true\n"
    )
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    command = [
        str(VENV_BIN / "openapi-python-client"),
        "generate",
        "--path",
        str(spec),
        "--output-path",
        str(out / "generated" / "sluice_api_client"),
        "--meta",
        "none",
        "--config",
        str(config),
        "--fail-on-warning",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"the client did not generate:\n{done.stdout}\n{done.stderr}"
    sys.path.insert(0, str(out / "generated"))
    try:
        yield importlib.import_module("sluice_api_client")
    finally:
        sys.path.remove(str(out / "generated"))


def operation(group: str, name: str):
    """A generated operation module (sluice_api_client.api.<tag>.<operationId>)."""
    return importlib.import_module(f"sluice_api_client.api.{group}.{name}")


def typed(value, client_module) -> bool:
    """A model class the generator wrote (not a dict, not a raw JSON value)."""
    return type(value).__module__.startswith(client_module.__name__ + ".models")


def test_a_generated_client_drives_the_walk_through_with_typed_models(contract_api, generated_client):
    """README's walk-through through a client generated from /openapi.json by an independent
    generator: every answer parses into the generated models, none is left as raw JSON."""
    sluice = generated_client
    models = importlib.import_module("sluice_api_client.models")
    url, tenants = contract_api
    workspace = tenants.workspace("Acme Corp", tier="pro")
    client = sluice.AuthenticatedClient(
        base_url=url, token=tenants.key(workspace["id"]), raise_on_unexpected_status=True
    )

    created = []
    for name in ("Beta", "Gamma", "Delta"):
        answer = operation("workspaces", "create_workspace").sync_detailed(
            client=client, body=models.CreateWorkspaceBody(name=name)
        )
        assert answer.status_code == 201 and typed(answer.parsed, sluice)
        created.append(answer.parsed.data)
    assert [w.name for w in created] == ["Beta", "Gamma", "Delta"] and created[0].tier == "free"

    page = operation("workspaces", "list_workspaces").sync(client=client, page=2, per_page=2, sort="-name")
    assert typed(page, sluice) and typed(page.meta, sluice) and typed(page.links, sluice)
    # Acme Corp, Beta, Delta, Gamma by name descending: page 2 of 2 holds Beta and Acme Corp.
    assert [w.name for w in page.data] == ["Beta", "Acme Corp"]
    assert (page.meta.current_page, page.meta.last_page, page.meta.total) == (
        2,
        2,
        4,
    ) and page.links.next_ is None  # `next` is a builtin: the generator appends _
    refused = operation("workspaces", "list_workspaces").sync_detailed(client=client, per_page=500)
    assert refused.status_code == 422 and typed(refused.parsed, sluice) and refused.parsed.error == "validation_failed"

    body = models.CreateApiKeyBody(name="read-only", scopes=["workspaces:read"])
    key = operation("api_keys", "create_api_key").sync(client=client, body=body)
    assert typed(key, sluice) and key.data.key.startswith("sk_live_")
    assert key.data.rate_limit_tier == "pro" and key.data.scopes == ["workspaces:read"]

    hook = operation("webhooks", "create_webhook").sync(
        client=client, body=models.CreateWebhookBody(url="https://hooks.example.com/sluice", events=["workspace.*"])
    )
    assert typed(hook, sluice) and hook.data.secret.startswith("whsec_") and hook.data.is_active

    domain = operation("pixel", "create_domain").sync(client=client, body=models.CreateDomainBody(host="shop.example"))
    assert typed(domain, sluice) and domain.data.host == "shop.example"
    # The batch's item model, whatever name the generator gives the array branch of the body's oneOf.
    item = next(getattr(models, n) for n in dir(models) if n.startswith("TrackEventBody") and n.endswith("Item"))
    batch = [
        item(event="pageview", url="https://shop.example/?utm_source=news"),
        item(event="signup", url="https://shop.example/join"),
        item(event="bad name!", url="https://shop.example/"),
    ]
    anonymous = sluice.Client(base_url=url, headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"})
    tracked = operation("pixel", "track_event").sync_detailed(client=anonymous, body=batch)
    assert tracked.status_code == 207 and typed(tracked.parsed, sluice)
    assert (tracked.parsed.accepted, tracked.parsed.rejected) == (2, 1)
    results = tracked.parsed.results
    assert all(typed(r, sluice) for r in results) and [r.index for r in results] == [0, 1, 2]
    assert [r.status for r in results][:2] == ["accepted", "accepted"] and results[0].event_id
    assert "event" in results[2].errors.additional_properties
