"""`make tool-eval` (`python -m tests.tool_corpus`): parse every corpus row, print the score per format.

Exits 1 when any row fails, after naming each failed row and what differed.
"""

from __future__ import annotations

import sys
from collections import Counter

from tests.tool_corpus import SPLIT_GROUP, cases, check, load_corpus


def main() -> int:
    tools, rows = load_corpus()
    total: Counter[str] = Counter()
    passed: Counter[str] = Counter()
    failures: list[str] = []
    for case in cases(rows):
        total[case.group] += 1
        problems = check(tools, case)
        if problems:
            failures.append(f"{case.label}: {'; '.join(problems)}")
        else:
            passed[case.group] += 1
    groups = [*sorted((g for g in total if g != SPLIT_GROUP), key=lambda g: (-total[g], g)), SPLIT_GROUP]
    print(f"{'format':<18}{'rows':>7}{'passed':>8}{'score':>9}")
    for group in groups:
        print(f"{group:<18}{total[group]:>7}{passed[group]:>8}{100 * passed[group] / total[group]:>8.1f}%")
    all_rows, all_passed = sum(total.values()), sum(passed.values())
    print(f"{'all':<18}{all_rows:>7}{all_passed:>8}{100 * all_passed / all_rows:>8.1f}%")
    print(
        f"({len(rows)} corpus rows; '{SPLIT_GROUP}' = those marked split, cut at every byte and fed byte by byte)"
    )
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
