"""Write prometheusrule.yaml: prometheus/alerts.yml's groups as a Prometheus Operator resource.

    python deploy/kubernetes/generate_prometheusrule.py          # rewrite the file
    python deploy/kubernetes/generate_prometheusrule.py --check  # exit 1 if it is out of date

Run it after every change to prometheus/alerts.yml; tests/test_kubernetes.py fails while the
two disagree.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RULES = ROOT / "prometheus" / "alerts.yml"
OUTPUT = HERE / "prometheusrule.yaml"

HEADER = """\
# GENERATED from prometheus/alerts.yml by deploy/kubernetes/generate_prometheusrule.py;
# do not edit by hand. spec.groups is that file's groups, unchanged.
# Your Prometheus resource's ruleSelector must match these labels; adjust `release` to what
# your installation selects on (kube-prometheus-stack uses its release name).
"""


class _Dumper(yaml.SafeDumper):
    """Block scalars for multi-line text, so PromQL stays readable."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def resource(rules: dict[str, Any]) -> dict[str, Any]:
    """The PrometheusRule holding the rules file's groups."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "reflexdb-exporter",
            "labels": {
                "app.kubernetes.io/name": "reflexdb-exporter",
                "app.kubernetes.io/part-of": "reflexdb",
                "release": "prometheus",
            },
        },
        "spec": {"groups": rules["groups"]},
    }


def render(rules_path: Path = RULES) -> str:
    """The text of prometheusrule.yaml for the rules file as it is now."""
    rules = yaml.safe_load(rules_path.read_text(encoding="utf-8"))
    body = yaml.dump(resource(rules), Dumper=_Dumper, sort_keys=False, width=100,
                     allow_unicode=True, default_flow_style=False)
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    """Write the file, or with --check report whether it is current."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the file differs from a fresh render")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} is out of date; run "
                  f"python {Path(__file__).relative_to(ROOT)}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
