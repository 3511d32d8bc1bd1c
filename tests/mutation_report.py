"""`make mutation`'s summary: mutmut's verdicts per module, the score, and every survivor.

Run from mutmut's working folder (build/mutation/) after `mutmut run`; prints a Markdown
table for docs/testing.md, then the surviving and untested mutants by module, and exits 1
when a module scores under the target.

The score is mutmut's own: killed and timed-out mutants over all mutants that were not
skipped, so a mutant no test covers ("no tests") counts against the module.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

TARGET = 90.0  # per cent killed, in every module
KILLED = ("killed", "timeout", "caught by type check")
_LINE = re.compile(r"^\s*(?P<name>[\w.ǁ]+__mutmut_\d+): (?P<status>.+)$")


def verdicts() -> dict[str, str]:
    """Each mutant's status, from `mutmut results --all true`."""
    mutmut = Path(sys.executable).with_name("mutmut")
    out = subprocess.run([str(mutmut), "results", "--all", "true"], capture_output=True,
                         text=True, check=True).stdout
    found = {}
    for line in out.splitlines():
        if match := _LINE.match(line):
            found[match["name"]] = match["status"].strip()
    return found


def module_of(mutant: str) -> str:
    """``exporter.client.x_parse__mutmut_3`` -> ``exporter/client.py``."""
    dotted = mutant.split(".x", 1)[0]
    return dotted.replace(".", "/") + ".py"


def main() -> int:
    """Print the table and the survivors; exit 1 if a module is under the target."""
    by_module: dict[str, Counter[str]] = defaultdict(Counter)
    survivors: dict[str, list[str]] = defaultdict(list)
    for mutant, status in sorted(verdicts().items()):
        module = module_of(mutant)
        by_module[module][status] += 1
        if status not in (*KILLED, "skipped"):
            survivors[module].append(f"{mutant}: {status}")
    print("| module | mutants | killed | timed out | survived | no tests | score |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    under = []
    totals: Counter[str] = Counter()
    for module, counts in sorted(by_module.items()):
        totals.update(counts)
        tested = sum(counts.values()) - counts["skipped"]
        killed = sum(counts[s] for s in KILLED)
        score = 100.0 * killed / tested if tested else 100.0
        if score < TARGET:
            under.append(module)
        print(f"| {module} | {tested} | {counts['killed']} | {counts['timeout']} | "
              f"{counts['survived']} | {counts['no tests']} | {score:.1f} % |")
    tested = sum(totals.values()) - totals["skipped"]
    killed = sum(totals[s] for s in KILLED)
    print(f"| all | {tested} | {totals['killed']} | {totals['timeout']} | "
          f"{totals['survived']} | {totals['no tests']} | "
          f"{100.0 * killed / max(tested, 1):.1f} % |")
    for module, names in sorted(survivors.items()):
        print(f"\n{module}: {len(names)} not killed")
        for name in names:
            print(f"  {name}")
    if under:
        print(f"\nunder {TARGET:g} %: {', '.join(under)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
