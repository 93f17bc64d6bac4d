"""The ``deep-explorer`` command line: the GUI's computations, headless, over the same core.

``deep-explorer`` alone opens the window (its options: :mod:`.window`); subcommands print results, or
one JSON object with ``--json``. Every error is one line on stderr and a non-zero exit status.

Subcommands are imported statically (:data:`SUBCOMMANDS`), so a frozen app has all of them:

- :mod:`.explore`: ``layers``, ``predict``, ``activations``
- :mod:`.attribution`: ``attribute``
- :mod:`.lstm`: ``lstm train|activations|cells|render|select|sample``
- :mod:`.bench`: ``bench attribution``, ``bench live`` (:mod:`.live`)

Shared options and helpers are in :mod:`.options`.
"""
from __future__ import annotations

import argparse
import os
import sys

from explorer.cli import attribution, bench, explore, lstm
from explorer.cli.options import CommandError, add_model_args, error_line
from explorer.cli.window import add_gui_args, run_window

# Each module has ``register(subparsers)`` that adds its subcommands with ``set_defaults(func=...)``.
SUBCOMMANDS = (explore, attribution, bench, lstm)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deep-explorer",
        description="See inside neural networks. With no subcommand, opens the window.")
    add_model_args(parser)
    add_gui_args(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    # OpenMP threads that spin while they wait take the CPU from the GUI thread, Qt's decoders and one
    # another when the cores are busy; a forward then runs many times slower (measured: 100 ms → 1.9 s
    # for resnet18 on a loaded 2-core machine). Waiting threads sleep instead, unless the user chose
    # otherwise. It must be set before torch is first imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        return run_window(args)
    from explorer.core.errors import ExplorerError  # noqa: PLC0415

    try:
        return int(args.func(args) or 0)
    except (ExplorerError, CommandError) as exc:
        print(f"deep-explorer {args.command}: error: {error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"deep-explorer {args.command}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"deep-explorer {args.command}: error: out of memory", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():
            print(f"deep-explorer {args.command}: error: out of memory on the device; try --device cpu",
                  file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    raise SystemExit(main())
