"""The benchmark suite's pure arithmetic: open-loop latency correction, percentiles, target verdicts.

bench/ is not collected (no timed assertions); its helpers are imported here by path.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import figures  # noqa: E402
import openloop  # noqa: E402


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert openloop.percentile(values, 50) == 50.0
    assert openloop.percentile(values, 99) == 99.0
    assert openloop.percentile(values, 100) == 100.0
    assert openloop.percentile([7.0], 99) == 7.0
    assert openloop.percentile([], 50) == 0.0


def test_latency_on_schedule_is_the_answer_time():
    # 1,000 req/s: request k is due 1 ms after request k-1; each sent on time and answered in 2 ms.
    rows = [(k, 5_000_000_000 + (k + 1) * 1_000_000, 2_000_000) for k in range(100)]
    latencies, lags = openloop.corrected_latencies(rows, 1000)
    assert all(abs(v - 2.0) < 1e-9 for v in latencies)
    assert all(abs(v) < 1e-9 for v in lags)


def test_a_late_send_counts_its_wait():
    # Request 3 was sent 50 ms late (every worker busy): its latency includes those 50 ms.
    rows = [(k, (k + 1) * 1_000_000, 1_000_000) for k in range(10)]
    rows[3] = (3, 4_000_000 + 50_000_000, 1_000_000)
    latencies, lags = openloop.corrected_latencies(rows, 1000)
    assert abs(latencies[3] - 51.0) < 1e-9
    assert abs(lags[3] - 50.0) < 1e-9
    assert abs(latencies[4] - 1.0) < 1e-9


def test_parse_results_counts_refusals():
    csv_text = (
        "1000,200,500,0,17,,,,0,GET,http://x/,\n"
        "2000,429,600,0,17,,,,1,GET,http://x/,\n"
        "3000,0,10000000000,0,0,timeout,,,2,GET,http://x/,\n"
    )
    rows, non_2xx, errors = openloop.parse_results(csv_text)
    assert rows == [(0, 1000, 500), (1, 2000, 600), (2, 3000, 10_000_000_000)]
    assert non_2xx == 2
    assert errors == {"HTTP 429": 1, "timeout": 1}


def test_ratio_target_met_or_missed():
    met = figures.Figure("pixel", "pixel", 6000, "req/s", 9000, "hello", 6000 / 9000).judge()
    missed = figures.Figure("pixel", "pixel", 3000, "req/s", 9000, "hello", 3000 / 9000).judge()
    assert met.met is True and met.target
    assert missed.met is False


def test_latency_target_is_a_maximum():
    assert figures.Figure("pixel_p99_80", "p99", 24.0, "ms", better="lower").judge().met is True
    assert figures.Figure("pixel_p99_80", "p99", 26.0, "ms", better="lower").judge().met is False


def test_a_short_sustained_run_does_not_prove_the_target():
    short = figures.Figure("e2e_single", "e2e", 12_000, "events/s", window_s=8).judge()
    full = figures.Figure("e2e_single", "e2e", 12_000, "events/s", window_s=60).judge()
    slow = figures.Figure("e2e_single", "e2e", 5_000, "events/s", window_s=8).judge()
    assert (short.met, full.met, slow.met) == (None, True, False)


def test_refused_figures_are_not_judged():
    refused = figures.Figure("workspace", "GET", None, "req/s", status="refused").judge()
    assert refused.met is None
    assert figures.Figure("e2e_single_count", "count", 10, "rows", status="refused").judge().met is False
