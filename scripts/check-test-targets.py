#!/usr/bin/env python3
"""Fails unless every test target of the workspace ran in the cargo output given.

Usage: check-test-targets.py CARGO_TEST_OUTPUT

`cargo test` prints one `Running <source> (<binary>)` line per test target it runs. A flag in
the wrong place (`--lib` applies to every `-p` package) or a target left out of scripts/test.sh
silently drops a whole file of tests; this compares those lines with `cargo metadata`.

Not counted: pgrx's `pgrx_embed_*` binary (a schema generator cargo-pgrx builds and runs, with
no tests of its own) and doc tests (none of the crates documents with runnable examples).
"""

import json
import os
import re
import subprocess
import sys

RUNNING = re.compile(r"^\s*Running (?:unittests )?(\S+) \((?:.*/)?deps/([A-Za-z0-9_]+)-[0-9a-f]+\)")


def expected_targets():
    metadata = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--no-deps", "--format-version", "1"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    targets = set()
    for package in metadata["packages"]:
        root = os.path.dirname(package["manifest_path"])
        for target in package["targets"]:
            if not target.get("test", True) or target["name"].startswith("pgrx_embed_"):
                continue
            source = os.path.relpath(target["src_path"], root)
            targets.add((package["name"], source, target["name"].replace("-", "_")))
    return targets


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1], encoding="utf-8", errors="replace") as log:
        ran = {m.groups() for m in map(RUNNING.match, log) if m}
    expected = expected_targets()
    missing = sorted(t for t in expected if (t[1], t[2]) not in ran)
    print(f"test targets: {len(expected)} in the workspace, {len(ran)} ran")
    for package, source, _ in missing:
        print(f"  not run: {package} {source}", file=sys.stderr)
    if missing:
        sys.exit(1)


if __name__ == "__main__":
    main()
