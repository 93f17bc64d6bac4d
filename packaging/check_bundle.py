"""Check a built bundle: run it from a copy outside the source tree and print its figures.

    python packaging/check_bundle.py dist/deep-explorer [--build-seconds N]

Exit status 0 when every check passed; each failure is one line.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path



def subcommands() -> list[list[str]]:
    """Every subcommand and sub-subcommand of the command line (read from its parser, so none is missed)."""
    import argparse  # noqa: PLC0415

    from explorer.cli import build_parser  # noqa: PLC0415 - the installed app this bundle was built from

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> list[list[str]]:
        out = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    out.append(prefix + [name])
                    out += walk(sub, prefix + [name])
        return out

    return walk(build_parser(), [])


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--build-seconds", type=float, default=None)
    args = ap.parse_args()
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="deep-explorer-bundle-") as tmp:
        copy = Path(tmp) / "deep-explorer"
        shutil.copytree(args.bundle, copy, symlinks=True)
        exe = copy / ("deep-explorer.exe" if os.name == "nt" else "deep-explorer")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["QT_QPA_PLATFORM"] = "offscreen"
        env["DEEP_EXPLORER_SETTINGS"] = str(Path(tmp) / "settings.ini")

        def run(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
            return subprocess.run([str(exe), *argv], cwd=tmp, env=env, capture_output=True, text=True,
                                  timeout=timeout)

        version = run("--version")
        print(version.stdout.strip())
        if version.returncode != 0 or str(copy) not in version.stdout.replace("\n", ""):
            failures.append(f"--version: rc {version.returncode}, resources not inside the bundle: "
                            f"{version.stdout.strip() or version.stderr.strip()[-300:]}")
        for sub in subcommands():
            r = run(*sub, "--help")
            if r.returncode != 0 or "usage:" not in r.stdout:
                failures.append(f"{' '.join(sub)} --help: rc {r.returncode}: {r.stderr.strip()[-300:]}")
        r = run("layers", "--model", "shapes", "--json")
        try:
            rows = json.loads(r.stdout)
            print(f"layers --model shapes --json: {len(rows.get('layers', rows)) if isinstance(rows, dict) else len(rows)} entries")
        except json.JSONDecodeError:
            failures.append(f"layers --json: rc {r.returncode}: {r.stderr.strip()[-300:]}")
        shot = Path(tmp) / "first_window.png"
        t0 = time.perf_counter()
        r = run("--no-settings", "--screenshot", str(shot), timeout=600)
        first_window = time.perf_counter() - t0
        if r.returncode != 0 or not shot.is_file() or shot.stat().st_size < 10_000:
            failures.append(f"--screenshot: rc {r.returncode}, file {'present' if shot.is_file() else 'missing'}: "
                            f"{r.stderr.strip()[-300:]}")
        else:
            keep = args.bundle.parent / "first_window.png"
            shutil.copy(shot, keep)
            print(f"screenshot: {keep}")
        size = folder_size(args.bundle)
    print(f"bundle size: {size / 2**30:.2f} GiB ({size:,} bytes)")
    if args.build_seconds is not None:
        print(f"build time: {args.build_seconds:.0f} s")
    print(f"time to first window (open, compute, save the screenshot, exit): {first_window:.1f} s")
    for line in failures:
        print(f"FAILED: {line}")
    print("check passed" if not failures else f"check failed ({len(failures)})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
