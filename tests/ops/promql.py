"""The metric names a PromQL expression reads: enough of PromQL's lexis to check rules and panels
against the catalogue of metrics, not a parser."""

import re

# Removed before looking for names: strings, label matchers and grouping clauses (their words are
# label names), range selectors, Grafana's variables.
STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
MATCHERS = re.compile(r"\{[^{}]*\}")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
RANGES = re.compile(r"\[[^\[\]]*\]")
VARIABLES = re.compile(r"\$\{[^}]*\}|\$\w+")
IDENTIFIER = re.compile(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?")  # group 2: a call, not a name
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS |= {"inf", "nan", "Inf", "NaN", "atstart", "start", "end"}


def metric_names(expr: str) -> set[str]:
    """Names of the series `expr` selects: `sum by (route) (rate(x_total{a="b"}[5m]))` → {"x_total"}."""
    text = VARIABLES.sub("1", STRINGS.sub('""', expr))
    text = RANGES.sub("", GROUPING.sub("", MATCHERS.sub("", text)))
    return {name for name, call in IDENTIFIER.findall(text) if not call and name not in KEYWORDS}
