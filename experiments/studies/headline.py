"""Regenerate the study section of the top-level README.md (between ``<!-- study:begin -->`` and
``<!-- study:end -->``) from each question folder's ``results.json``; questions not run yet say so.

    python experiments/studies/headline.py           # rewrite README.md
    python experiments/studies/headline.py --check   # exit 1 when README.md is out of date (CI)
    python experiments/studies/headline.py --print   # print the section only

Quick smoke runs (``<question>/_quick/``) are never read: the README shows only runs of the study itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from studies import QUESTIONS, REPO, headline_section, replace_section  # noqa: E402


def load_results(root: Path = HERE) -> dict[str, dict | None]:
    out: dict[str, dict | None] = {}
    for q in QUESTIONS:
        path = root / q / "results.json"
        res = json.loads(path.read_text()) if path.is_file() else None
        out[q] = None if res and res.get("quick") else res
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readme", type=Path, default=REPO / "README.md")
    ap.add_argument("--check", action="store_true", help="exit 1 if the README's section is out of date")
    ap.add_argument("--print", action="store_true", dest="show", help="print the section, change nothing")
    args = ap.parse_args(argv)
    section = headline_section(load_results())
    if args.show:
        print(section)
        return 0
    text = args.readme.read_text()
    new = replace_section(text, section)
    if args.check:
        if new != text:
            print(f"{args.readme}: the study section is out of date; run python experiments/studies/headline.py")
            return 1
        return 0
    if new != text:
        args.readme.write_text(new)
        print(f"rewrote the study section of {args.readme}")
    else:
        print(f"{args.readme}: the study section is up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
