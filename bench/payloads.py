"""What the load generators send: wrk Lua scripts and vegeta target files for each endpoint.

* pixel: ``POST /api/v1/pixel/track`` with one event or a batch, each request from a random
  client address in 10.0.0.0/8 (``X-Forwarded-For``, honoured from the trusted proxy
  127.0.0.1), so the per-IP limit (300 requests/min) is checked on every request and refuses
  none; the page varies over 50 paths of the site's host;
* authenticated: any method and path with ``Authorization: Bearer`` rotating over the
  tenant's keys, so the per-key limiter runs on every request and no key runs dry.

wrk draws a fresh address per request in Lua; vegeta cycles through a pre-generated file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import openloop

TRACK = "/api/v1/pixel/track"
# Distinct addresses in the vegeta files: even at 20,000 req/s each sends ~24 requests/min.
PIXEL_TARGETS = 50_000
BATCH_TARGETS = 2_000  # 13 KB each
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
EVENT = (
    '{"event":"pageview","url":"https://%(host)s/page/%%d?utm_source=bench",'
    '"referrer":"https://www.google.com/","properties":{"title":"Bench page"}}'
)
PIXEL_LUA = """
math.randomseed(os.time() + %(seed)d)
local event = '%(event)s'
local batch = %(batch)d
request = function()
  local ip = string.format("10.%%d.%%d.%%d", math.random(0, 255), math.random(0, 255), math.random(1, 254))
  local body
  if batch == 1 then
    body = string.format(event, math.random(1, 50))
  else
    local parts = {}
    for i = 1, batch do parts[i] = string.format(event, math.random(1, 50)) end
    body = "[" .. table.concat(parts, ",") .. "]"
  end
  return wrk.format("POST", "%(path)s",
    {["Content-Type"] = "application/json", ["X-Forwarded-For"] = ip, ["User-Agent"] = "%(ua)s"}, body)
end
"""
AUTH_LUA = """
local keys = {%(keys)s}
local n, i = #keys, 0
local body = %(body)s
request = function()
  i = i %% n + 1
  return wrk.format("%(method)s", "%(path)s",
    {["Authorization"] = "Bearer " .. keys[i], ["Content-Type"] = "application/json"}, body)
end
"""


def pixel_script(workdir: Path, host: str, batch: int) -> Path:
    """A wrk script posting `batch` events (1: a single event object) to the site `host`."""
    path = workdir / f"pixel-{host}-{batch}.lua"
    path.write_text(
        PIXEL_LUA % {"seed": batch, "event": EVENT % {"host": host}, "batch": batch, "ua": USER_AGENT, "path": TRACK}
    )
    return path


def pixel_body(host: str, batch: int, rng: random.Random) -> bytes:
    events = [EVENT % {"host": host} % rng.randint(1, 50) for _ in range(batch)]
    return (events[0] if batch == 1 else "[" + ",".join(events) + "]").encode()


def random_ip(rng: random.Random) -> str:
    return f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def pixel_targets(workdir: Path, base_url: str, host: str, batch: int) -> Path:
    """A vegeta targets file of the same requests, one random address each."""
    rng = random.Random(batch)
    count = PIXEL_TARGETS if batch == 1 else BATCH_TARGETS
    return openloop.write_targets(
        workdir / f"pixel-{host}-{batch}.targets",
        (
            openloop.target(
                "POST",
                base_url + TRACK,
                {"Content-Type": "application/json", "X-Forwarded-For": random_ip(rng), "User-Agent": USER_AGENT},
                pixel_body(host, batch, rng),
            )
            for _ in range(count)
        ),
    )


def auth_files(
    workdir: Path, name: str, method: str, base_url: str, path: str, keys: list[str], body: str | None = None
) -> tuple[Path, Path]:
    """(wrk script, vegeta targets) of `method path` rotating over `keys`."""
    script = workdir / f"{name}.lua"
    script.write_text(
        AUTH_LUA
        % {
            "keys": ", ".join(json.dumps(k) for k in keys),
            "method": method,
            "path": path,
            "body": json.dumps(body) if body else "nil",
        }
    )
    targets = openloop.write_targets(
        workdir / f"{name}.targets",
        (
            openloop.target(
                method,
                base_url + path,
                {"Content-Type": "application/json", "Authorization": f"Bearer {k}"},
                (body or "").encode(),
            )
            for k in keys
        ),
    )
    return script, targets
