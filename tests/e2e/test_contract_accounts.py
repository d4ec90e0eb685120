"""Workspaces, API keys and entitlements against their own /openapi.json: each body declares the
limits the service applies (additionalProperties false, lengths, patterns, enums, bounds), a value
just inside a limit is accepted and one just outside refused with 422 naming the field, and every
2xx answer these tests get matches the operation's declared answer schema."""

import re
import zoneinfo
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

from app.access.scopes import KNOWN
from app.access.tiers import TIERS
from app.resources.features import AMOUNT_MAX, FEATURES

WORKSPACES, WORKSPACE = "/api/v1/workspaces", "/api/v1/workspaces/{id}"
KEYS, KEY, ROTATE = "/api/v1/api-keys", "/api/v1/api-keys/{id}", "/api/v1/api-keys/{id}/rotate"
CHECK, USAGE, SUMMARY = "/api/v1/entitlements/check", "/api/v1/entitlements/usage", "/api/v1/entitlements/summary"


def _pattern(validator, pattern, instance, schema):
    """`pattern` as ECMA-262 reads `^…$` (Python's `$` also matches before a final newline)."""
    if isinstance(instance, str) and not re.search(pattern.removesuffix("$") + r"\Z", instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


Strict = validators.extend(Draft202012Validator, {"pattern": _pattern})


@pytest.fixture(scope="module")
def document(api) -> dict:
    return httpx.get(api + "/openapi.json").json()


@pytest.fixture
def send(api, document):
    """(method, path template, path values, body=…, params=…, headers=…) → the response, whose 2xx
    body is checked against the operation's answer schema in the document."""

    def go(method: str, template: str, values: dict | None = None, **kwargs) -> httpx.Response:
        r = httpx.request(method, api + template.format(**(values or {})), timeout=10, **kwargs)
        if 200 <= r.status_code < 300 and r.status_code != 204:
            answer = document["paths"][template][method.lower()]["responses"][str(r.status_code)]
            schema = answer["content"]["application/json"]["schema"]
            errors = [e.message for e in Strict(inline(document, schema)).iter_errors(r.json())]
            assert not errors, (method, template, errors[:5], r.json())
        return r

    return go


def inline(document: dict, schema):
    """The schema with every `#/components/schemas/…` reference replaced by what it names."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if ref is not None:
            return inline(document, document["components"]["schemas"][ref.rsplit("/", 1)[1]])
        return {key: inline(document, value) for key, value in schema.items()}
    if isinstance(schema, list):
        return [inline(document, item) for item in schema]
    return schema


def body_schema(document: dict, method: str, template: str) -> dict:
    schema = document["paths"][template][method.lower()]["requestBody"]["content"]["application/json"]["schema"]
    return inline(document, schema)


def query_schema(document: dict, method: str, template: str) -> dict[str, dict]:
    return {p["name"]: p for p in document["paths"][template][method.lower()]["parameters"] if p["in"] == "query"}


def admitted(schema: dict, value) -> bool:
    return Strict(schema).is_valid(value)


def refused_naming(r: httpx.Response, field: str) -> bool:
    return r.status_code == 422 and r.json()["error"] == "validation_failed" and field in r.json()["errors"]


def agree(document, send, method, template, values, headers, body, field):
    """The document and the service give the same verdict on the body; a refusal names `field`."""
    r = send(method, template, values, json=body, headers=headers)
    if admitted(body_schema(document, method, template), body):
        assert r.status_code in (200, 201), (body, r.text)
    else:
        assert refused_naming(r, field), (body, r.text)


def nullable_inner(document: dict, schema: dict) -> dict:
    """The non-null branch of a nullable field's anyOf, its $ref (a long enum shown once) resolved."""
    branches = schema["anyOf"]
    assert {"type": "null"} in branches and len(branches) == 2
    (inner,) = [branch for branch in branches if branch != {"type": "null"}]
    ref = inner.get("$ref")
    return document["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else inner


# --- workspaces ------------------------------------------------------------------------------


def test_workspace_bodies_declare_their_limits(document):
    for method, template in (("POST", WORKSPACES), ("PATCH", WORKSPACE)):
        schema = body_schema(document, method, template)
        props = schema["properties"]
        assert schema["additionalProperties"] is False
        assert set(props) == {"name", "slug", "tier", "settings"}
        assert props["name"]["maxLength"] == 255 and props["name"]["pattern"].startswith("^")
        assert props["slug"]["maxLength"] == 100 and props["slug"]["pattern"] == "^(?:[a-z0-9]+(?:-[a-z0-9]+)*)$"
        assert props["tier"]["enum"] == list(TIERS)
        settings = props["settings"]
        assert settings["additionalProperties"] is False and set(settings["properties"]) == {"timezone", "locale"}
        timezone, locale = settings["properties"]["timezone"], settings["properties"]["locale"]
        assert nullable_inner(document, timezone)["enum"] == sorted(zoneinfo.available_timezones())
        locale = nullable_inner(document, locale)
        assert locale["pattern"].startswith("^") and locale["pattern"].endswith("$") and locale["maxLength"] == 8
    assert body_schema(document, "POST", WORKSPACES)["required"] == ["name"]
    assert "required" not in body_schema(document, "PATCH", WORKSPACE)


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": "x" * 255}, "name"),
        ({"name": "x" * 256}, "name"),
        ({"name": " \t\u3000"}, "name"),
        ({"name": " padded "}, "name"),
        ({"name": "ok", "owner": 1}, "owner"),
        ({"name": "ok", "slug": "s" * 100}, "slug"),
        ({"name": "ok", "slug": "s" * 101}, "slug"),
        ({"name": "ok", "slug": "a--b"}, "slug"),
        ({"name": "ok", "slug": "a-b-9"}, "slug"),
        ({"name": "ok", "tier": "enterprise"}, "tier"),
        ({"name": "ok", "tier": "business"}, "tier"),
        ({"name": "ok", "settings": {"timezone": "America/Argentina/Buenos_Aires"}}, "settings.timezone"),
        ({"name": "ok", "settings": {"timezone": "Mars/Olympus"}}, "settings.timezone"),
        ({"name": "ok", "settings": {"timezone": "europe/london"}}, "settings.timezone"),
        ({"name": "ok", "settings": {"timezone": None, "locale": None}}, "settings"),
        ({"name": "ok", "settings": {"locale": "fr_FR"}}, "settings.locale"),
        ({"name": "ok", "settings": {"locale": "zh-Hant"}}, "settings.locale"),
        ({"name": "ok", "settings": {"locale": "fr_fr"}}, "settings.locale"),
        ({"name": "ok", "settings": {"locale": "en_GB\n"}}, "settings.locale"),
        ({"name": "ok", "settings": {"colour": "red"}}, "settings.colour"),
        ({"name": "ok", "settings": None}, "settings"),
    ],
)
def test_create_workspace_accepts_exactly_what_its_schema_admits(document, send, tenant, body, field):
    _, headers = tenant
    agree(document, send, "POST", WORKSPACES, None, headers, body, field)


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "body"),
        ({"name": "y" * 255}, "name"),
        ({"name": "y" * 256}, "name"),
        ({"name": None}, "name"),
        ({"name": ""}, "name"),
        ({"settings": {"timezone": "Asia/Kolkata", "locale": "pt_BR"}}, "settings"),
        ({"settings": {"timezone": "Asia/Calcutta "}}, "settings.timezone"),
        ({"settings": {"locale": "english"}}, "settings.locale"),
        ({"tier": "enterprise"}, "tier"),  # the current tier: a no-op
        ({"tier": "gold"}, "tier"),
        ({"id": 5}, "id"),
    ],
)
def test_update_workspace_accepts_exactly_what_its_schema_admits(document, send, tenant, body, field):
    ws, headers = tenant
    agree(document, send, "PATCH", WORKSPACE, {"id": ws["id"]}, headers, body, field)


def test_workspace_answers_match_their_schemas(send, tenant):
    ws, headers = tenant
    created = send("POST", WORKSPACES, json={"name": "Answered", "settings": {"locale": "de"}}, headers=headers)
    assert created.status_code == 201
    assert created.json()["data"]["settings"] == {"timezone": "UTC", "locale": "de"}
    assert send("GET", WORKSPACE, {"id": ws["id"]}, headers=headers).status_code == 200
    for params in ({}, {"include": "account"}, {"fields": "id,slug", "include": "account"}, {"per_page": 1}):
        assert send("GET", WORKSPACES, params=params, headers=headers).status_code == 200


# --- API keys --------------------------------------------------------------------------------


def test_api_key_bodies_declare_their_limits(document):
    schema = body_schema(document, "POST", KEYS)
    props = schema["properties"]
    assert schema["additionalProperties"] is False and schema["required"] == ["name"]
    assert props["name"]["maxLength"] == 255
    scopes = props["scopes"]
    assert scopes["items"]["enum"] == sorted(KNOWN)
    assert (scopes["minItems"], scopes["maxItems"]) == (1, len(KNOWN))
    assert nullable_inner(document, props["rate_limit_tier"])["enum"] == list(TIERS)
    assert nullable_inner(document, props["expires_at"])["pattern"].startswith("^")
    rotate = document["paths"][ROTATE]["post"]["requestBody"]
    assert rotate["required"] is False
    grace = rotate["content"]["application/json"]["schema"]
    assert grace["additionalProperties"] is False
    assert grace["properties"]["grace_period_hours"] | {"description": ""} == {
        "type": "integer",
        "minimum": 0,
        "maximum": 720,
        "description": "",
    }


def later(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": "k" * 255}, "name"),
        ({"name": "k" * 256}, "name"),
        ({"name": "\u2003"}, "name"),
        ({"name": "k", "secret": "x"}, "secret"),
        ({"name": "k", "scopes": []}, "scopes"),
        ({"name": "k", "scopes": ["workspaces:read", "workspaces:read"]}, "scopes"),
        ({"name": "k", "scopes": ["workspaces:read"] * 31}, "scopes"),
        ({"name": "k", "scopes": ["posts:read"]}, "scopes"),
        ({"name": "k", "scopes": "workspaces:read"}, "scopes"),
        ({"name": "k", "rate_limit_tier": None}, "rate_limit_tier"),
        ({"name": "k", "rate_limit_tier": "starter"}, "rate_limit_tier"),
        ({"name": "k", "rate_limit_tier": "Starter"}, "rate_limit_tier"),
        ({"name": "k", "expires_at": None}, "expires_at"),
        ({"name": "k", "expires_at": "2999-12-31"}, "expires_at"),
        ({"name": "k", "expires_at": "2999-12-31T23:59:59.5+01:00"}, "expires_at"),
        ({"name": "k", "expires_at": "2999-02-29T00:00:00Z"}, "expires_at"),
        ({"name": "k", "expires_at": "2999-12-31 23:59:59"}, "expires_at"),
        ({"name": "k", "expires_at": 32503680000}, "expires_at"),
    ],
)
def test_create_api_key_accepts_exactly_what_its_schema_admits(document, send, tenant, body, field):
    _, headers = tenant
    agree(document, send, "POST", KEYS, None, headers, body, field)


def test_create_api_key_rules_after_the_shape_are_named_with_it(send, tenant):
    """An expires_at in the past is schema-valid but refused (a rule no schema states), together
    with the shape's own errors."""
    _, headers = tenant
    body = {"name": "k" * 256, "expires_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat()}
    r = send("POST", KEYS, json=body, headers=headers)
    assert r.status_code == 422 and set(r.json()["errors"]) == {"name", "expires_at"}
    assert r.json()["errors"]["expires_at"] == ["The expires_at must be in the future."]


@pytest.mark.parametrize(
    "body, field",
    [
        (None, "body"),
        ({}, "body"),
        ({"grace_period_hours": 0}, "grace_period_hours"),
        ({"grace_period_hours": 720}, "grace_period_hours"),
        ({"grace_period_hours": 721}, "grace_period_hours"),
        ({"grace_period_hours": -1}, "grace_period_hours"),
        ({"grace_period_hours": 2.5}, "grace_period_hours"),
        ({"grace_period_hours": None}, "grace_period_hours"),
        ({"grace_hours": 1}, "grace_hours"),
    ],
)
def test_rotate_accepts_exactly_what_its_schema_admits(document, send, tenant, body, field):
    _, headers = tenant
    made = send("POST", KEYS, json={"name": "to rotate"}, headers=headers)
    values = {"id": made.json()["data"]["id"]}
    if body is None:
        assert send("POST", ROTATE, values, headers=headers).status_code == 200
    else:
        agree(document, send, "POST", ROTATE, values, headers, body, field)


def test_a_key_shows_the_tier_that_applies_to_it_everywhere(send, tenants):
    """rate_limit_tier: the workspace's when the key has none (stored as null, following it), the
    key's own within the workspace's otherwise."""
    ws = tenants.workspace(tier="pro")
    headers = {"Authorization": f"Bearer {tenants.key(ws['id'])}"}
    created = send("POST", KEYS, json={"name": "Follows"}, headers=headers).json()["data"]
    slow = send("POST", KEYS, json={"name": "Slow", "rate_limit_tier": "starter"}, headers=headers).json()["data"]
    assert (created["rate_limit_tier"], slow["rate_limit_tier"]) == ("pro", "starter")
    assert tenants.fetchval("SELECT rate_limit_tier FROM api_keys WHERE id = $1", created["id"]) is None
    assert send("GET", KEY, {"id": created["id"]}, headers=headers).json()["data"]["rate_limit_tier"] == "pro"
    listed = send("GET", KEYS, params={"per_page": 100}, headers=headers).json()["data"]
    assert {k["id"]: k["rate_limit_tier"] for k in listed if k["id"] in (created["id"], slow["id"])} == {
        created["id"]: "pro",
        slow["id"]: "starter",
    }
    assert all(k["rate_limit_tier"] == "pro" for k in listed if k["id"] != slow["id"])  # the fixture's too
    rotated = send("POST", ROTATE, {"id": created["id"]}, json={"grace_period_hours": 0}, headers=headers)
    assert rotated.json()["data"]["rate_limit_tier"] == "pro"
    assert tenants.fetchval("SELECT rate_limit_tier FROM api_keys WHERE id = $1", rotated.json()["data"]["id"]) is None


def test_a_key_stored_above_its_workspace_s_tier_shows_the_workspace_s(send, tenants):
    ws = tenants.workspace(tier="starter")
    headers = {"Authorization": f"Bearer {tenants.key(ws['id'], tier='enterprise')}"}
    [key] = send("GET", KEYS, headers=headers).json()["data"]
    assert key["rate_limit_tier"] == "starter"


def test_api_key_answers_match_their_schemas(send, tenant):
    _, headers = tenant
    made = send("POST", KEYS, json={"name": "Answered", "expires_at": later(3)}, headers=headers)
    assert made.status_code == 201
    old = made.json()["data"]
    rotated = send("POST", ROTATE, {"id": old["id"]}, json={"grace_period_hours": 2}, headers=headers)
    assert rotated.status_code == 200 and rotated.json()["data"]["rotated_from_id"] == old["id"]
    rotating = send("GET", KEY, {"id": old["id"]}, headers=headers).json()["data"]
    assert rotating["status"] == "rotating" and "grace_period_ends_at" in rotating
    for params in ({}, {"include": "workspace"}, {"fields": "id,rate_limit_tier"}, {"status": "rotating"}):
        assert send("GET", KEYS, params=params, headers=headers).status_code == 200


# --- entitlements ------------------------------------------------------------------------------


def test_entitlement_inputs_declare_their_limits(document):
    params = query_schema(document, "GET", CHECK)
    assert params["feature"]["required"] is True and params["feature"]["schema"]["enum"] == list(FEATURES)
    assert params["quantity"]["required"] is False
    assert params["quantity"]["schema"] == {"type": "integer", "minimum": 1, "maximum": AMOUNT_MAX}
    schema = body_schema(document, "POST", USAGE)
    props = schema["properties"]
    assert schema["additionalProperties"] is False and schema["required"] == ["feature"]
    assert props["feature"]["enum"] == list(FEATURES)
    assert (props["quantity"]["minimum"], props["quantity"]["maximum"]) == (-AMOUNT_MAX, AMOUNT_MAX)
    assert props["quantity"]["not"] == {"const": 0}
    assert props["event_id"]["maxLength"] == 100 and nullable_inner(document, props["metadata"])["type"] == "object"
    metered = sorted(name for name, f in FEATURES.items() if f.metered)
    assert sorted(schema["if"]["properties"]["feature"]["enum"]) == metered
    assert schema["then"] == {"properties": {"quantity": {"minimum": 1}}}


@pytest.mark.parametrize(
    "params, field",
    [
        ({"feature": "posts"}, "feature"),
        ({"feature": "posts", "quantity": str(AMOUNT_MAX)}, "quantity"),
        ({"feature": "posts", "quantity": str(AMOUNT_MAX + 1)}, "quantity"),
        ({"feature": "posts", "quantity": "1"}, "quantity"),
        ({"feature": "posts", "quantity": "0"}, "quantity"),
        ({"quantity": "1"}, "feature"),
        ({"feature": "Posts"}, "feature"),
    ],
)
def test_check_accepts_exactly_what_its_parameters_admit(document, send, tenant, params, field):
    _, headers = tenant
    declared = query_schema(document, "GET", CHECK)
    admits = all(name in params for name, p in declared.items() if p["required"]) and all(
        admitted(declared[name]["schema"], int(value) if value.isdigit() else value) for name, value in params.items()
    )
    r = send("GET", CHECK, params=params, headers=headers)
    assert (r.status_code == 200) if admits else refused_naming(r, field), (params, r.text)


def test_check_answers_both_verdicts_as_declared(send, tenants):
    ws = tenants.workspace(tier="free")
    headers = {"Authorization": f"Bearer {tenants.key(ws['id'])}"}
    allowed = send("GET", CHECK, params={"feature": "posts", "quantity": "10"}, headers=headers).json()
    refused = send("GET", CHECK, params={"feature": "posts", "quantity": "11"}, headers=headers).json()
    assert allowed["allowed"] is True and refused["allowed"] is False and refused["reason"] == "LIMIT_EXCEEDED"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"feature": "posts"}, "feature"),
        ({"feature": "posts", "quantity": 0}, "quantity"),
        ({"feature": "posts", "quantity": -1}, "quantity"),
        ({"feature": "storage", "quantity": -AMOUNT_MAX}, "quantity"),
        ({"feature": "storage", "quantity": -AMOUNT_MAX - 1}, "quantity"),
        ({"feature": "api_calls", "quantity": -1}, "quantity"),
        ({"feature": "api_calls", "quantity": 1}, "quantity"),
        ({"feature": "seo_reports", "quantity": 0}, "quantity"),
        ({"feature": "posts", "quantity": 2.0}, "quantity"),
        ({"feature": "posts", "metadata": None}, "metadata"),
        ({"feature": "posts", "metadata": {"a": [1, {"b": None}]}}, "metadata"),
        ({"feature": "posts", "metadata": []}, "metadata"),
        ({"feature": "posts", "event_id": "e" * 100}, "event_id"),
        ({"feature": "posts", "event_id": "e" * 101}, "event_id"),
        ({"feature": "posts", "event_id": "\n"}, "event_id"),
        ({"feature": "posts", "count": 1}, "count"),
        ({"feature": "likes"}, "feature"),
    ],
)
def test_usage_accepts_exactly_what_its_schema_admits(document, send, tenant, body, field):
    _, headers = tenant
    agree(document, send, "POST", USAGE, None, headers, body, field)


def test_usage_and_summary_answers_match_their_schemas(send, tenant):
    _, headers = tenant
    first = send("POST", USAGE, json={"feature": "api_calls", "event_id": "once"}, headers=headers)
    again = send("POST", USAGE, json={"feature": "api_calls", "event_id": "once"}, headers=headers)
    assert first.status_code == again.status_code == 200 and again.json()["duplicate"] is True
    assert send("POST", USAGE, json={"feature": "storage", "quantity": 5}, headers=headers).status_code == 200
    summary = send("GET", SUMMARY, headers=headers)
    assert summary.status_code == 200 and summary.json()["data"]["entitlements"]["storage"]["unit"] == "bytes"


def test_usage_of_more_than_two_gib_of_storage_is_recorded(send, tenant, tenants):
    """A quantity past Postgres' int4 once failed the write-through of the stock level with a 500."""
    ws, headers = tenant
    r = send("POST", USAGE, json={"feature": "storage", "quantity": 3 * 2**30}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["current_usage"] == 3 * 2**30
    stored = "SELECT used FROM entitlement_usage WHERE workspace_id = $1 AND feature = 'storage'"
    assert tenants.fetchval(stored, ws["id"]) == 3 * 2**30


def test_replayed_key_answers_match_their_schemas(send, tenant):
    """A replay (same Idempotency-Key) keeps the answer's shape, its key null and secret_redacted true."""
    _, headers = tenant
    once = {**headers, "Idempotency-Key": f"create-{datetime.now(UTC).timestamp()}"}
    first = send("POST", KEYS, json={"name": "Replayed"}, headers=once)
    again = send("POST", KEYS, json={"name": "Replayed"}, headers=once)
    assert first.status_code == again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert first.json()["data"]["key"] and again.json()["data"]["key"] is None
    assert again.json()["data"]["secret_redacted"] is True
    once["Idempotency-Key"] += "-rotate"
    values = {"id": first.json()["data"]["id"]}
    for _ in range(2):
        assert send("POST", ROTATE, values, json={"grace_period_hours": 1}, headers=once).status_code == 200


@pytest.mark.parametrize("expires_at", ["9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59-14:00"])
def test_a_key_expiring_at_the_end_of_year_9999_is_shown(send, tenant, expires_at):
    """The last instant of the range once went to Postgres as 'infinity' and came back without a
    time zone: every later answer showing the key failed with a 500."""
    _, headers = tenant
    made = send("POST", KEYS, json={"name": "Late", "expires_at": expires_at}, headers=headers)
    assert made.status_code == 201, made.text
    assert made.json()["data"]["expires_at"] == "9999-12-31T23:59:59Z"
    assert send("GET", KEY, {"id": made.json()["data"]["id"]}, headers=headers).status_code == 200
    assert send("GET", KEYS, params={"sort": "-expires_at"}, headers=headers).status_code == 200
