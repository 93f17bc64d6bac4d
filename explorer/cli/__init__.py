"""The ``deep-explorer`` command line: the GUI's computations, headless, over the same core.

``deep-explorer`` alone opens the window (its options: :mod:`.window`); subcommands print results, or
one JSON object with ``--json``. Every error is one line on stderr and a non-zero exit status.

Subcommands are imported statically (:data:`SUBCOMMANDS`), so a frozen app has all of them:

- :mod:`.explore`: ``layers``, ``predict``, ``activations``
- :mod:`.attribution`: ``attribute``
- :mod:`.lstm`: ``lstm train|activations|cells|render|select|sample``
- :mod:`.topk`: ``topk``, ``embed``
- :mod:`.optimize`: ``visualize``, ``dream``, ``invert``
- :mod:`.compare`: ``compare`` (two checkpoints layer by layer)
- :mod:`.bench`: ``bench attribution``, ``bench live`` (:mod:`.live`)

Shared options and helpers are in :mod:`.options`.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from explorer.cli import attribution, bench, compare, explore, lstm, optimize, topk
from explorer.cli.options import CommandError, add_model_args, error_line
from explorer.cli.window import add_gui_args, run_window

# Each module has ``register(subparsers)`` that adds its subcommands with ``set_defaults(func=...)``.
SUBCOMMANDS = (explore, attribution, bench, lstm, optimize, topk, compare)


class _VersionAction(argparse.Action):
    """``--version``: one line, never re-wrapped by argparse's help formatter (paths stay whole)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):  # noqa: A002
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def version_text() -> str:
    from explorer import __version__  # noqa: PLC0415
    from explorer.core.resources import RESOURCES  # noqa: PLC0415

    return f"deep-explorer {__version__} (resources: {RESOURCES})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deep-explorer",
        description="See inside neural networks. With no subcommand, opens the window.")
    parser.add_argument("--version", action=_VersionAction,
                        help="print the version (and where the bundled resources are) and exit")
    add_model_args(parser)
    add_gui_args(parser)
    if "--verbose" not in parser._option_string_actions:  # the window's options may have added it
        parser.add_argument("-v", "--verbose", action="store_true",
                            help="also print the log (with tracebacks) on stderr; it always goes to the log file")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(subparsers)
    return parser


def _split_verbose(argv: list[str]) -> tuple[list[str], bool]:
    """``-v``/``--verbose`` taken out wherever it stands (before a ``--``), so it works after a subcommand."""
    out, verbose = [], False
    for i, arg in enumerate(argv):
        if arg == "--":
            out += argv[i:]
            break
        if arg in ("-v", "--verbose"):
            verbose = True
        else:
            out.append(arg)
    return out, verbose


def main(argv: list[str] | None = None) -> int:
    # OpenMP's wait policy is left to the runtime (libgomp spins about 3 ms, then sleeps) unless the user
    # sets OMP_WAIT_POLICY / GOMP_SPINCOUNT. Measured on 2 cores, resnet18 at 224 on 2 threads: PASSIVE
    # made a forward 35.5 ms against 27.4 ms (its threads sleep and are woken between the ~60 parallel
    # regions of a pass), and the live view's rate fell with it. (A line here once set PASSIVE after the
    # subcommands had imported torch, where it had no effect.)
    argv, verbose = _split_verbose(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    args = parser.parse_args(argv)
    args.verbose = verbose
    if args.command is None:
        return run_window(args)
    from explorer.core.errors import ExplorerError  # noqa: PLC0415
    from explorer.logs import setup_logging  # noqa: PLC0415

    log_file = setup_logging(verbose)
    log = logging.getLogger("explorer.cli")
    log.info("deep-explorer %s", " ".join(argv))
    name = f"deep-explorer {args.command}"
    try:
        return int(args.func(args) or 0)
    except (ExplorerError, CommandError) as exc:
        log.info("%s: %s: %s", name, type(exc).__name__, exc)
        print(f"{name}: error: {error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout went away (``| head``): nothing left to say
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
    except MemoryError:
        log.exception("%s: out of memory", name)
        print(f"{name}: error: out of memory (set DEEP_EXPLORER_MEMORY_LIMIT to refuse such requests "
              f"before they start)", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a user never sees a traceback: it goes to the log file
        log.exception("%s failed", name)
        if isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower():
            print(f"{name}: error: out of memory on the device; try --device cpu", file=sys.stderr)
            return 2
        where = f"; details in {log_file}" if log_file else ""
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"{name}: internal error: {type(exc).__name__}{': ' + message[:300] if message else ''}{where}",
              file=sys.stderr)
        return 3


if __name__ == "__main__":
    raise SystemExit(main())
