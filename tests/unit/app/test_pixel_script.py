"""app/pixel/pixel.js in a simulated page (node's vm): what it sends, where, and when it stays quiet."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
HARNESS = Path(__file__).with_name("pixel_script_harness.js")
ENABLED = {"enabled": True, "features": {"pageviews": True, "events": True, "sessions": True}, "sample_rate": 1.0}


def run_script(config: dict, random: float = 0.25) -> list[dict]:
    node = shutil.which("node")
    assert node, "node is needed to run the tracking script (Debian package nodejs)"
    out = subprocess.run(
        [node, str(HARNESS), str(ROOT / "app" / "pixel" / "pixel.js"), json.dumps(config), str(random)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def events_of(sent: list[dict]) -> list[dict]:
    return [e for beacon in sent for e in (beacon["body"] if isinstance(beacon["body"], list) else [beacon["body"]])]


def test_pageviews_queued_and_custom_events_go_out_as_text_plain_beacons_to_the_api():
    sent = run_script(ENABLED)
    assert {b["url"] for b in sent} == {"https://api.sluice.test/api/v1/pixel/track"}
    assert {b["type"] for b in sent} == {"text/plain"}  # no CORS preflight
    events = events_of(sent)
    assert [(e["event"], e["url"]) for e in events] == [
        ("pageview", "https://shop.example/a?utm_source=news"),  # on load
        ("early", "https://shop.example/a?utm_source=news"),  # called before the script loaded
        ("signup", "https://shop.example/a?utm_source=news"),
        ("pageview", "https://shop.example/b"),  # SPA navigation, flushed on pagehide
    ]
    assert events[0]["referrer"] == "https://www.google.com/" and events[0]["properties"] == {"title": "Shop"}
    assert events[2]["properties"] == {"plan": "pro"}
    assert {e["sample_key"] for e in events} == {0.25} and all(isinstance(e["timestamp"], int) for e in events)


def test_a_disabled_or_unknown_site_sends_nothing():
    assert run_script({"enabled": False}) == []


@pytest.mark.parametrize("draw, expected", [(0.2, 4), (0.7, 0)])
def test_sample_rate_keeps_a_page_whole_or_not_at_all(draw, expected):
    sent = run_script({**ENABLED, "sample_rate": 0.5}, random=draw)
    assert len(events_of(sent)) == expected


def test_switched_off_features_are_not_sent():
    sent = run_script({**ENABLED, "features": {"pageviews": False, "events": True}})
    assert [e["event"] for e in events_of(sent)] == ["early", "signup"]
