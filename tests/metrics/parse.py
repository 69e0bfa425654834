#!/usr/bin/python3
"""Parses Prometheus/OpenMetrics text from stdin with the Prometheus project's own Python
parser (python3-prometheus-client) and prints its samples as JSON: a list of
{"name", "labels", "value"}. A text the parser refuses exits 1 with its error."""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as classic

text = sys.stdin.read()
parse = openmetrics if text.rstrip().endswith("# EOF") else classic
try:
    samples = [
        {"name": s.name, "labels": s.labels, "value": s.value, "type": f.type}
        for f in parse(text)
        for s in f.samples
    ]
except Exception as e:  # the parser's error, whatever its type
    print(f"unparsable: {e}", file=sys.stderr)
    sys.exit(1)
json.dump(samples, sys.stdout)
