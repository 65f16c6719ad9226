"""The Textual app (`autointerp-tui`): not built yet; see the TUI issue."""

import sys


def main() -> None:
    print("autointerp-tui: not built yet (the TUI arrives with its own issue); "
          "inspect a database with `autointerp info DB` meanwhile.", file=sys.stderr)
    sys.exit(2)
