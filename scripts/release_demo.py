"""Release the embedded demo models: the one way weights get into ``speechllm/assets``.

    python scripts/release_demo.py --check                     # what tests/speechllm/test_assets.py checks
    python scripts/release_demo.py --demo runs/demo/ship --pruned runs/demo-pruned   # a deliberate release

Every weight file committed stays in the repository's history forever, so the shipped models change
only through this script, at most once per change of the recipe. A release:
1. checks each new model dir (a readable slimspeech dir whose weight files all open);
2. copies it into ``speechllm/assets/<name>`` (``demo``, ``demo-pruned``), replacing the old one;
3. stores a file that is byte-identical to one of an earlier released dir once: the later one becomes
   a relative symbolic link to it (the pruned export shares the demo's encoder, 7 MB);
4. writes ``weights.sha256`` into each dir (``sha256sum`` format, every file but itself), which the
   test suite checks: weights that change without a release fail the tests.

``--check`` does steps 1 and 4's comparison only, and also refuses two identical weight files that are
not linked. Exit status 0 when everything holds, else 2 with one line per problem.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "speechllm" / "assets"
NAMES = ("demo", "demo-pruned")  # in release order: a later dir may link to an earlier one's files
SUMS = "weights.sha256"
WEIGHTS = (".safetensors", ".bin", ".pt")

if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))
from speechllm.provenance import sha256_file as sha256  # noqa: E402


def files(model_dir: Path) -> list[Path]:
    return sorted(p for p in model_dir.rglob("*") if p.is_file() and p.name != SUMS)


def sums(model_dir: Path) -> dict[str, str]:
    return {p.relative_to(model_dir).as_posix(): sha256(p) for p in files(model_dir)}


def read_sums(model_dir: Path) -> dict[str, str]:
    path = model_dir / SUMS
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        digest, _, name = line.partition("  ")
        out[name] = digest
    return out


def check_dir(model_dir: Path) -> list[str]:
    """Problems with one model dir: not loadable as a slimspeech dir, or unreadable weights."""
    from speechllm.errors import SlimError
    from speechllm.modeldir import check_weight_files, read_spec

    try:
        read_spec(model_dir)
        check_weight_files(model_dir)
    except SlimError as exc:
        return [f"{model_dir}: {exc}"]
    return []


def check(assets: Path = ASSETS) -> list[str]:
    """Every released dir loads, matches its weights.sha256, and no weight file is stored twice."""
    problems, seen = [], {}
    for name in NAMES:
        d = assets / name
        if not d.is_dir():
            continue
        problems += check_dir(d)
        recorded, actual = read_sums(d), sums(d)
        if not recorded:
            problems.append(f"{d}: no {SUMS}: release it with scripts/release_demo.py")
        elif recorded != actual:
            changed = sorted(k for k in recorded.keys() | actual.keys() if recorded.get(k) != actual.get(k))
            problems.append(f"{d}: files differ from {SUMS} ({', '.join(changed)}): weights change only by a "
                            "release (scripts/release_demo.py)")
        for p in files(d):
            if p.suffix not in WEIGHTS or p.is_symlink():
                continue
            digest = actual[p.relative_to(d).as_posix()]
            if digest in seen:
                problems.append(f"{p} is a second copy of {seen[digest]}: store it once (a release links it)")
            seen[digest] = p
    return problems


def release(sources: dict[str, Path], assets: Path = ASSETS) -> None:
    problems = [p for src in sources.values() for p in check_dir(src)]
    if problems:
        raise SystemExit("error: " + "; ".join(problems))
    for name in NAMES:
        if name in sources:
            dest = assets / name
            tmp = assets / f".{name}.release"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(sources[name], tmp, symlinks=False)
            (tmp / SUMS).unlink(missing_ok=True)
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(tmp, dest)
    link_duplicates(assets)
    for name in NAMES:
        d = assets / name
        if d.is_dir():
            (d / SUMS).write_text("".join(f"{digest}  {rel}\n" for rel, digest in sums(d).items()))


def link_duplicates(assets: Path = ASSETS) -> None:
    """A weight file identical to one of an earlier dir (in NAMES order) becomes a relative link to it."""
    first: dict[str, Path] = {}
    for name in NAMES:
        d = assets / name
        if not d.is_dir():
            continue
        for p in files(d):
            if p.suffix not in WEIGHTS:
                continue
            digest = sha256(p)
            if digest in first and not p.is_symlink():
                p.unlink()
                p.symlink_to(os.path.relpath(first[digest], p.parent))
            first.setdefault(digest, p.resolve())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only check the released dirs (exit 2 on a problem)")
    p.add_argument("--demo", type=Path, help="model dir to release as speechllm/assets/demo")
    p.add_argument("--pruned", type=Path, help="model dir to release as speechllm/assets/demo-pruned")
    p.add_argument("--relink", action="store_true",
                   help="store identical weight files of the released dirs once and rewrite weights.sha256")
    args = p.parse_args(argv)
    if args.check:
        problems = check()
        for line in problems:
            print(f"error: {line}", file=sys.stderr)
        return 2 if problems else 0
    sources = {k: v for k, v in (("demo", args.demo), ("demo-pruned", args.pruned)) if v is not None}
    if not sources and not args.relink:
        p.error("nothing to release: give --demo and/or --pruned (or --check, --relink)")
    release(sources)
    print(f"released {', '.join(sources) or 'nothing new'} into {ASSETS}; weights.sha256 written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
