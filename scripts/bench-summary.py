#!/usr/bin/env python3
"""Condenses criterion's console output to one line per benchmark: name and median throughput.

Usage: cargo bench ... 2>&1 | python3 scripts/bench-summary.py
"""
import re
import sys

name = None
for line in sys.stdin:
    m = re.match(r"^([A-Za-z0-9_./-]+)\s*(time:.*)?$", line.rstrip())
    if m and "/" in m.group(1) and not line.startswith(" "):
        name = m.group(1)
    t = re.search(r"thrpt:\s+\[\S+ \S+ (\S+ \S+) \S+ \S+\]", line)
    if t and name and "%" not in line:
        print(f"{name:60s} {t.group(1)}")
        name = None
