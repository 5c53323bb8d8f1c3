"""Read a Dockerfile into instructions and check daic's image rules on it.

No container engine runs here, so images are described and linted, not built. The rules:

- every ``FROM`` is pinned: a digest or a full X.Y.Z release tag (:mod:`daic.deploy.pinning`; a
  stage name is fine);
- the final stage ends as a non-root user given by number (``USER 8888:8888``): Kubernetes can
  only verify ``runAsNonRoot`` for a numeric user;
- every ``pip install`` is constrained by a lock file (``-c requirements/<name>.lock``) and pins
  what it names outside the project (``pkg==version``);
- no ``ADD`` of a URL, no ``curl``/``wget`` piped into a shell;
- no ``ENV``/``ARG`` that sets a credential-like variable;
- OCI labels ``org.opencontainers.image.title`` and ``.version`` name the image and its tag.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from daic.deploy.pinning import pin_problem
from daic.deploy.policy import is_credential_name
from daic.deploy.problems import Problem


@dataclass(frozen=True)
class Instruction:
    line: int          # 1-based line where the instruction starts
    keyword: str       # upper case: FROM, RUN, USER ...
    args: str          # the rest, continuation lines joined


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)


def parse(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile: comments dropped, ``\\`` continuations joined."""
    out: list[Instruction] = []
    buf, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not buf:
            start = number
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        keyword, _, args = buf.partition(" ")
        out.append(Instruction(start, keyword.upper(), args.strip()))
        buf = ""
    if buf:
        keyword, _, args = buf.partition(" ")
        out.append(Instruction(start, keyword.upper(), args.strip()))
    return out


def stages(instructions: list[Instruction]) -> list[Stage]:
    out: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            base = words[0] if words else ""
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            out.append(Stage(base, name))
        elif out:
            out[-1].instructions.append(ins)
    return out


def labels(instructions: list[Instruction]) -> dict[str, str]:
    """``LABEL`` key/value pairs (the last value of a key wins)."""
    out: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "LABEL":
            for word in shlex.split(ins.args):
                key, sep, value = word.partition("=")
                if sep:
                    out[key] = value
    return out


def pip_installs(instructions: list[Instruction]) -> list[tuple[int, list[str]]]:
    """The argument lists of every ``pip install`` in RUN instructions, with their line."""
    out = []
    for ins in instructions:
        if ins.keyword != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", ins.args):
            words = shlex.split(command)
            for i in range(len(words) - 1):
                if words[i].endswith("pip") and words[i + 1] == "install":
                    out.append((ins.line, words[i + 2:]))
                    break
                if words[i] == "-m" and words[i + 1] == "pip" and i + 2 < len(words) and words[i + 2] == "install":
                    out.append((ins.line, words[i + 3:]))
                    break
    return out


def installed_extras(instructions: list[Instruction]) -> set[str]:
    """The setup.py extras of the local project installed by ``pip install ".[a,b]"``."""
    extras: set[str] = set()
    for _, args in pip_installs(instructions):
        for arg in args:
            m = re.fullmatch(r"\.\[([A-Za-z0-9_,\- ]+)\]", arg)
            if m:
                extras |= {e.strip() for e in m.group(1).split(",") if e.strip()}
    return extras


@dataclass(frozen=True)
class InstallSet:
    """What a Dockerfile's ``pip install`` commands put into the image.

    ``requirements``: what pip resolves with dependencies -- ``daic[extra,...]`` for the project
    itself, and every pinned package named on the command line or in a ``-r`` file installed with
    dependencies; ``alone``: what is installed with ``--no-deps`` (the package, not its
    dependencies); ``locks``: the constraint files used."""

    requirements: tuple[str, ...]
    alone: tuple[str, ...]
    locks: frozenset[str]

    @property
    def extras(self) -> set[str]:
        out: set[str] = set()
        for req in self.requirements:
            m = re.fullmatch(r"daic\[([^\]]*)\]", req)
            if m:
                out |= {e.strip() for e in m.group(1).split(",") if e.strip()}
        return out

    def names(self) -> set[str]:
        """Distribution names installed (normalised), the project as ``daic``."""
        return {_normalise(re.split(r"[\[=<>!~ ;]", r, maxsplit=1)[0]) for r in (*self.requirements, *self.alone)}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(path: str | Path) -> list[str]:
    """``name==version`` of each requirement in a requirements file (comments and options dropped)."""
    out = []
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        out.append(line.split()[0])
    return out


def install_set(instructions: list[Instruction], root: str | Path) -> InstallSet:
    """Render the install set of a Dockerfile: ``root`` is the build context (``-r`` files are read
    from there, as ``COPY requirements/`` puts them in the image)."""
    requirements: list[str] = []
    alone: list[str] = []
    locks: set[str] = set()
    for _, args in pip_installs(instructions):
        no_deps = "--no-deps" in args
        lock = _constraint(args)
        if lock:
            locks.add(Path(lock).name)
        named = []
        for i, arg in enumerate(args):
            if arg in ("-r", "--requirement") and i + 1 < len(args):
                named += requirement_lines(Path(root) / args[i + 1])
        for arg in _requirements(args):
            m = re.fullmatch(r"\.\[([A-Za-z0-9_,\- ]+)\]", arg)
            if m:
                named.append(f"daic[{m.group(1).replace(' ', '')}]")
            elif arg == ".":
                named.append("daic")
            elif not arg.startswith((".", "/")):
                named.append(arg)
        (alone if no_deps else requirements).extend(named)
    return InstallSet(tuple(requirements), tuple(alone), frozenset(locks))


def env(instructions: list[Instruction]) -> dict[str, str]:
    """``ENV`` values of the instructions (``$VAR`` of an earlier ENV expanded; the last wins)."""
    out: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword != "ENV":
            continue
        for word in shlex.split(ins.args):
            key, sep, value = word.partition("=")
            if sep:
                out[key] = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: out.get(m.group(1), m.group(0)),
                                  value)
    return out


def lint(path: str | Path, lock_dir: str | Path | None = None) -> list[Problem]:
    """Problems of the Dockerfile at ``path`` under the rules in this module's docstring.

    ``lock_dir`` (the repository's ``requirements/``) makes the check confirm that the lock file a
    ``pip install -c`` names exists."""
    path = Path(path)
    where = str(path)
    instructions = parse(path.read_text())
    out: list[Problem] = []

    def bad(ins: Instruction | None, message: str) -> None:
        out.append(Problem(where, f"line {ins.line}" if ins else "", message))

    all_stages = stages(instructions)
    if not all_stages:
        return [Problem(where, "", "no FROM instruction")]
    names = {s.name for s in all_stages if s.name}
    for ins in instructions:
        if ins.keyword == "FROM":
            base = next((w for w in ins.args.split() if not w.startswith("--")), "")
            if base in names:
                continue
            unpinned = pin_problem(base)
            if unpinned:
                bad(ins, f"FROM {unpinned}")
        if ins.keyword == "ADD" and re.search(r"https?://", ins.args):
            bad(ins, "ADD of a URL: download in a RUN step with a checksum, or COPY a vendored file")
        if ins.keyword == "RUN" and re.search(r"(curl|wget)[^|]*\|\s*(ba|z)?sh\b", ins.args):
            bad(ins, "a download piped into a shell")
        if ins.keyword in ("ENV", "ARG"):
            for word in shlex.split(ins.args):
                key, sep, value = word.partition("=")
                if is_credential_name(key) and (sep and value):
                    bad(ins, f"{ins.keyword} {key} sets a credential in the image")
    final = all_stages[-1]
    users = [i for i in final.instructions if i.keyword == "USER"]
    if not users:
        bad(None, "the final stage sets no USER: the image would run as root")
    else:
        last = users[-1]
        user = last.args.split(":")[0]
        if not user.isdigit():
            bad(last, f"USER {last.args}: give the user as a number so runAsNonRoot can be verified")
        elif int(user) == 0:
            bad(last, "USER 0 is root")
    for line, args in pip_installs(instructions):
        ins = next(i for i in instructions if i.line == line)
        lock = _constraint(args)
        if lock is None:
            bad(ins, "pip install without -c requirements/<lock>: versions would float")
        elif lock_dir is not None and not (Path(lock_dir) / Path(lock).name).is_file():
            bad(ins, f"pip install -c {lock}: no such lock file in {lock_dir}")
        for arg in _requirements(args):
            if arg.startswith((".", "/")):
                continue  # the project itself, constrained by the lock
            if not re.fullmatch(r"[A-Za-z0-9_.\-]+(\[[A-Za-z0-9_,\-]+\])?==[A-Za-z0-9_.+!\-]+", arg):
                bad(ins, f"pip install {arg}: pin it exactly (name==version)")
    found = labels(instructions)
    for key in ("org.opencontainers.image.title", "org.opencontainers.image.version"):
        if not found.get(key):
            bad(None, f"no LABEL {key}")
    return out


_OPTIONS_WITH_VALUE = {"-c", "--constraint", "-r", "--requirement", "-i", "--index-url", "--extra-index-url",
                       "-f", "--find-links", "--target", "-t", "--prefix", "--root", "--platform"}


def _constraint(args: list[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg in ("-c", "--constraint") and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--constraint="):
            return arg.split("=", 1)[1]
    return None


def _requirements(args: list[str]) -> list[str]:
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in _OPTIONS_WITH_VALUE:
            skip = True
            continue
        if arg.startswith("-"):
            continue
        out.append(arg)
    return out
