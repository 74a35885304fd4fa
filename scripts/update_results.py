#!/usr/bin/env python
"""Put a results table into a markdown file, between markers, with machine, date and command.

The section ``<!-- BEGIN {name} --> ... <!-- END {name} -->`` is replaced (or appended when
absent), so reruns keep one up-to-date copy.

    python scripts/update_results.py --section "Toy demo" --table exp/toy_demo/results.md \
        --command "scripts/recipes/toy/run_demo.sh" --file docs/RESULTS.md
"""
import argparse
import datetime
import os
import platform
import re
from pathlib import Path


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
        return f"{os.cpu_count()} CPU cores ({cpu}), no GPU, torch {torch.__version__}"
    except ImportError:
        return f"{os.cpu_count()} CPU cores ({cpu})"


def update(file: Path, section: str, body: str) -> None:
    begin, end = f"<!-- BEGIN {section} -->", f"<!-- END {section} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    text = file.read_text(encoding="utf-8") if file.is_file() else "# Results\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, file)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--section", required=True)
    p.add_argument("--table", type=Path, required=True)
    p.add_argument("--command", required=True)
    p.add_argument("--file", type=Path, required=True)
    args = p.parse_args()
    body = (
        f"Measured {datetime.date.today().isoformat()} on {machine()} with `{args.command}`.\n\n"
        + args.table.read_text(encoding="utf-8")
    )
    update(args.file, args.section, body)
    print(f"updated section '{args.section}' of {args.file}")


if __name__ == "__main__":
    main()
