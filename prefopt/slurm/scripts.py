"""The text of Slurm scripts: a job's #SBATCH lines and script, the recipe file the jobs run, and submit.sh, which
submits the jobs in order, each after the ones it reads."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from prefopt.slurm.resources import Request


@dataclass(frozen=True)
class Job:
    """One sbatch script and the jobs it waits for."""

    var: str  # its shell variable in submit.sh, and its file's stem
    stage: str
    script: str
    request: Request
    after: tuple[tuple[str, str], ...] = ()  # (afterok | afterany, var)
    array: str | None = None

    @property
    def filename(self) -> str:
        return f"{self.var}.sh"


@dataclass
class Rendered:
    """Every file of a Slurm rendering, by path, and the jobs in submission order."""

    directory: Path
    jobs: list[Job]
    files: dict[Path, str] = field(default_factory=dict)

    def write(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        for path, text in self.files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            if path.suffix == ".sh":
                path.chmod(0o755)
        return self.directory / "submit.sh"

    def text(self) -> str:
        """Every script, each under a ``# ==> path <==`` line, and the recipe files it would write (the dry run's
        output)."""
        recipes = [str(path) for path in self.files if path.suffix == ".yaml"]
        scripts = [f"# ==> {path} <==\n{text}" for path, text in self.files.items() if path.suffix == ".sh"]
        return "\n".join(scripts) + f"\n# and the recipe files the jobs run: {', '.join(recipes)}\n"


UNSAFE_CHARS = re.compile(r"[^\w.+-]+")


def job_name(name: str, stage: str) -> str:
    """A job name Slurm and the #SBATCH line take as one plain word."""
    return f"{UNSAFE_CHARS.sub('_', name)[:80]}-{stage}"


def _plain(value: str) -> bool:
    return bool(re.fullmatch(r"[\w.:,=+%/@-]+", value))


def sbatch_lines(
    name: str, req: Request, array: str | None = None, output: str | None = None, multi_node: bool = False
) -> list[str]:
    """The #SBATCH lines of a job (sbatch reads them without a shell: every value is one plain word, checked when
    the recipe loaded)."""
    lines = [f"#SBATCH --job-name={name}"]
    if array:
        lines.append(f"#SBATCH --array={array}")
    if multi_node or req.nodes > 1:
        lines += [f"#SBATCH --nodes={req.nodes}", "#SBATCH --ntasks-per-node=1"]
    if req.gpus:
        lines.append(f"#SBATCH --gres=gpu:{req.gpus}")
    for option, value in (
        ("cpus-per-task", req.cpus_per_task),
        ("time", req.time),
        ("mem", req.mem),
        ("partition", req.partition),
    ):
        if value is not None:
            lines.append(f"#SBATCH --{option}={value}")
    if output and _plain(output):
        lines.append(f"#SBATCH --output={output}")
    lines += [f"#SBATCH {arg}" for arg in req.sbatch_args]
    return lines


def job_script(header: list[str], comment: str, assignments: dict[str, str], body: str, workdir: Path) -> str:
    q = shlex.quote
    lines = ["#!/usr/bin/env bash", *header, *(f"# {line}" if line else "#" for line in comment.splitlines())]
    lines += ["set -euo pipefail", f"cd {q(str(workdir))}"]
    lines += [f"{name}={value}" for name, value in assignments.items()]
    return "\n".join(lines) + "\n" + body


def recipe_text(data: dict, source: str | Path) -> str:
    return (
        f"# Written by prefopt from {source} (overrides and swept values applied); the Slurm jobs run this file.\n"
        + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    )


def submit_script(rendered: Rendered, title: str, workdir: Path, log_dir: Path, sbatch_args: list[str]) -> str:
    q = shlex.quote
    extra = "".join(f" {q(a)}" for a in sbatch_args)
    lines = [
        "#!/usr/bin/env bash",
        f"# {title}",
        "# Submit with: bash " + q(str(rendered.directory / "submit.sh")),
        "# Each job waits for the ones it reads (afterok; the merge after the generation array: afterany). A job",
        "# that fails leaves its dependants pending: fix it, then run this again (finished stages are skipped).",
        "set -euo pipefail",
        f"cd {q(str(workdir))}",
        f"mkdir -p {q(str(log_dir))}",
        'submit() { local id; id=$(sbatch --parsable "$@"); echo "${id%%;*}"; }',
    ]
    for job in rendered.jobs:
        deps = {}
        for kind, var in job.after:
            deps.setdefault(kind, []).append(f"${{{var}}}")
        dependency = ",".join(f"{kind}:{':'.join(vars_)}" for kind, vars_ in deps.items())
        log = q(str(log_dir / ("%x-%A_%a.out" if job.array else "%x-%j.out")))
        dep = f' --dependency="{dependency}"' if dependency else ""
        lines.append(f"{job.var}=$(submit{dep} --output={log}{extra} {q(str(rendered.directory / job.filename))})")
    first, last = rendered.jobs[0].var, rendered.jobs[-1].var
    lines.append(f'echo "submitted {len(rendered.jobs)} jobs: {first} ${{{first}}} ... {last} ${{{last}}}"')
    return "\n".join(lines) + "\n"
