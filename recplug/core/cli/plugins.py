"""``recplug plugins [--json] [--all]``: what is loaded, from which distribution and version, and which hooks and
components each plugin contributes."""

from __future__ import annotations

import json

from recplug.core.cli.boundary import CommandParser
from recplug.core.cli.commands import COMMANDS


def main(argv: list[str]) -> int:
    from recplug.core.model.plugins import load_plugins

    parser = CommandParser(prog="recplug plugins", description=COMMANDS["plugins"].summary)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--all", action="store_true", help="include skipped and disabled plugins")
    args = parser.parse_args(argv)
    records = [p for p in load_plugins().values() if args.all or p.status == "active"]
    if args.json:
        print(json.dumps([p.as_dict() for p in records], indent=2))
        return 0
    for p in records:
        status = "" if p.status == "active" else f"  [{p.status}{': ' + p.error if p.error else ''}]"
        print(f"{p.name}  ({p.distribution} {p.version}){status}")
        if p.hooks:
            print(f"    hooks:      {', '.join(p.hooks)}")
        if p.components:
            print(f"    components: {', '.join(p.components)}")
    return 0
