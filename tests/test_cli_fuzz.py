"""Seeded fuzzing of every ``daic`` option and argument: a hostile value of the wrong kind is a
clear error naming the field (click's "Invalid value for '--x'" or a one-line "Error: ..."),
never a traceback, a hang or a nonsense value silently taken.

The test walks the real click tree (``daic.cli.main``), so a command or option added later is
fuzzed without being listed here. Each invocation changes one parameter and gives the others their
defaults (required ones a plain value), against an empty store, in-process with ``CliRunner``, under
a per-invocation time bound (SIGALRM).

Where a command would start long work (train, serve, run the pipeline or the demo, talk to
Kubeflow) the work's entry point is replaced by a tripwire that stops the command: this file tests
parsing, not the work, which has its own tests. A value this file calls nonsense (a negative count,
NaN, an infinite timeout, a number past 64 bits, a name with '/' or NUL) that reaches a tripwire
was accepted silently, and fails the test.

No hypothesis (it is not in the locks): fixed seeds pick the values, so a failure replays exactly;
the command line is in the assertion message.
"""
from __future__ import annotations

import contextlib
import math
import random
import signal
from dataclasses import dataclass

import click
import pytest
from click.testing import CliRunner

from daic.cli import main

TIME_BOUND_S = 20  # one invocation; parsing and failing fast on an empty store take well under 1 s


class Reached(Exception):
    """A command got past its parsing to the work (the tripwire's stop)."""


class TooSlow(Exception):
    """One invocation ran past TIME_BOUND_S."""


# Where each long-running command's work begins: (module, attribute). Replaced by a tripwire.
WORK = [
    ("daic.demo.driver", "run_demo"),
    ("daic.training.workflow", "train_and_register"),
    ("daic.pipelines.local_run", "run_pipeline"),
    ("daic.pipelines.submit", "submit"),
    ("daic.pipelines.upload", "upload"),
    ("aiohttp.web", "run_app"),
    ("daic.serving.http_limits", "serve_app"),
    ("daic.labeling.app", "serve"),
    ("daic.sidecar.app", "run"),
    ("daic.serving.stack", "LocalStack"),
    ("daic.storage.seaweedfs", "SeaweedS3"),
    ("daic.operators.local_controller", "LocalController"),
    ("daic.sampling.simulate", "simulate_pool"),
    ("daic.pipelines.compile", "compile_pipeline"),
]

# Options whose value is free text: any string is a value, so only "no traceback" is asserted.
FREE_TEXT = {"description", "experiment", "run_name", "notes", "labels_prefix", "unlabeled_key",
             "ray_address", "prefix", "pipeline_callable", "champion_switch", "store_secret", "model_image",
             "sidecar_image", "corruption", "names", "scenario", "labeler", "pairs", "result_key"}
# The same, for one command only (elsewhere the option of that name is a checked name).
FREE_TEXT_IN = {("pipeline", "upload"): {"name", "version"}}


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    param: str
    value: str
    nonsense: bool  # must be refused (exit != 0) without reaching the work


def walk(cmd: click.Command, path: tuple[str, ...] = ()):
    ctx = click.Context(cmd, info_name=" ".join(path) or "daic")
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            yield from walk(cmd.get_command(ctx, name), path + (name,))


def leaf_commands():
    return [(p, c) for p, c in walk(main) if p and not (isinstance(c, click.Group) and not c.invoke_without_command)]


def _benign(param: click.Parameter) -> list[str]:
    """A plain value for a required parameter, so the fuzzed one is reached."""
    name = param.name or ""
    if name == "cycle_path":
        return ["--cycle", "/nonexistent/cycle.yaml"] if isinstance(param, click.Option) else ["x"]
    value = {"name": "mnist", "version": "v0001", "cycle": "c1", "key": "x.json", "labels_prefix": "labels/c1/",
             "host": "http://127.0.0.1:9"}.get(name, "x")
    return [param.opts[0], value] if isinstance(param, click.Option) else [value]


def _hostile(path: tuple[str, ...], param: click.Parameter, tmp_path, rng: random.Random) -> list[tuple[str, bool]]:
    """(value, nonsense) pairs for this parameter's kind."""
    t = param.type
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    huge = str(2 ** 64 + rng.randint(0, 1000))
    if isinstance(t, (click.types.IntParamType, click.IntRange)):
        return [("-1", True), (str(-rng.randint(2, 10 ** 6)), True), (huge, True), ("1e3", True), ("", True),
                ("nan", True), ("ten", True)]
    if isinstance(t, (click.types.FloatParamType, click.FloatRange)):
        return [("nan", True), ("inf", True), ("-inf", True), ("1e999", True), ("-1", True),
                (str(-rng.uniform(1e-6, 1e9)), True), ("", True), ("0x", True)]
    if isinstance(t, click.Choice):
        return [("bogus", True), ("", True), (rng.choice(list(t.choices)).upper() + "x", True)]
    if isinstance(t, click.types.BoolParamType) or getattr(param, "is_flag", False):
        return []
    if isinstance(t, click.Path):
        return [("", False), ("/nonexistent/dir/x", False), (str(a_file), False), (str(tmp_path), False),
                (str(a_file) + "/below", False), ("a\x00b", True), ("p" * 5000, False)]
    free = param.name in FREE_TEXT or param.name in FREE_TEXT_IN.get(path, ())
    return [("", not free), ("../x", not free), ("a/b", not free), ("a\x00b", True), ("n" * 5000, not free),
            ("ftp://x/y", not free), ("{", not free), ("-", not free), ("x=" + "\u00e9" * 3, not free),
            ("a\nb", not free), ("http://h:99999/", not free), (" ", not free)]


def cases(tmp_path, seed: int) -> list[Case]:
    rng = random.Random(seed)
    out = []
    for path, cmd in leaf_commands():
        required = [p for p in cmd.params if p.required or isinstance(p, click.Argument) and p.default is None]
        for param in cmd.params:
            if param.name == "help" or getattr(param, "is_flag", False):
                continue
            for value, nonsense in _hostile(path, param, tmp_path, rng):
                base = [a for r in required if r is not param for a in _benign(r)]
                given = [param.opts[0], value] if isinstance(param, click.Option) else [value]
                if param.name == "pairs":
                    given = ["-p", value]
                out.append(Case(path + tuple(base + given), param.name or "", value, nonsense))
    return out


@contextlib.contextmanager
def _time_bound(seconds: int):
    def _raise(signum, frame):  # noqa: ARG001
        raise TooSlow(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def tripwires(monkeypatch):
    import importlib

    def trip(*args, **kwargs):
        raise Reached()

    for module, attr in WORK:
        monkeypatch.setattr(importlib.import_module(module), attr, trip)


def _names(param: click.Parameter) -> list[str]:
    names = list(getattr(param, "opts", [])) + [param.name or "", (param.name or "").replace("_", "-")]
    if isinstance(param, click.Argument):
        names.append(param.human_readable_name)
    return [n for n in names if n]


def invoke(args, tmp_path):
    env = {"DAIC_STORE": f"file://{tmp_path}/store", "DAIC_LABELERS": str(tmp_path / "labelers.json")}
    work = tmp_path / "cwd"
    work.mkdir(exist_ok=True)
    with contextlib.chdir(work), _time_bound(TIME_BOUND_S):
        return CliRunner().invoke(main, list(args), env=env)


def check(case: Case, tmp_path) -> str | None:
    """What is wrong with how the command took this value, or None."""
    result = invoke(case.args, tmp_path)
    exc = result.exception
    shown = " ".join(repr(a) if (not a or " " in a or "\x00" in a) else a[:80] for a in case.args)
    if isinstance(exc, TooSlow):
        return f"daic {shown}: hung (more than {TIME_BOUND_S} s)"
    if isinstance(exc, Reached):
        return f"daic {shown}: nonsense value {case.value[:40]!r} accepted" if case.nonsense else None
    if exc is not None and not isinstance(exc, SystemExit):
        return f"daic {shown}: {type(exc).__name__}: {str(exc)[:300]}"
    if "Traceback" in result.output:
        return f"daic {shown}: printed a traceback"
    if case.nonsense and result.exit_code == 0:
        return f"daic {shown}: nonsense value {case.value[:40]!r} accepted (exit 0)"
    if case.nonsense:
        cmd = main
        for part in case.args:
            if isinstance(cmd, click.Group) and part in cmd.list_commands(click.Context(cmd)):
                cmd = cmd.get_command(click.Context(cmd), part)
        param = next(p for p in cmd.params if p.name == case.param)
        said = result.output
        value_shown = case.value and (case.value[:20] in said or repr(case.value)[1:21] in said)
        if not any(n in said for n in _names(param)) and not value_shown:
            return f"daic {shown}: the error does not name {param.opts[0] if param.opts else param.name}: {said[-300:]!r}"
    return None


def test_the_tree_is_walked():
    """The walk reaches the nested commands (a broken walk would make the fuzz test vacuous)."""
    paths = {p for p, _ in leaf_commands()}
    assert {("pipeline", "run"), ("serve", "manifest"), ("label", "token"), ("train",), ("serve",)} <= paths


@pytest.mark.parametrize("seed", [0, 1])
def test_every_option_refuses_hostile_values_with_an_error_naming_it(seed, tmp_path, tripwires):
    problems = [p for case in cases(tmp_path, seed) if (p := check(case, tmp_path))]
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems)


def pipeline_param_cases(seed: int) -> list[tuple[str, str]]:
    """``-p name=value`` pairs that must be refused: unknown names, and for each parameter values
    of the wrong type for its default (a word for a number, NaN, a negative or 65-bit count, a
    list for a mapping, malformed YAML, a NUL byte)."""
    from daic.pipelines.local_run import pipeline_parameters

    rng = random.Random(seed)
    out = [("nope=1", "nope"), ("=1", "''"), ("budget", "name=value"), ("Budget=1", "Budget"),
           ("cycle_id=../x", "cycle_id"), ("run_name=a/b", "run_name"), ("store_url=a\x00b", "store_url")]
    for name, default in pipeline_parameters().items():
        if isinstance(default, bool):
            wrong = ["maybe", "2", "[true]"]
        elif isinstance(default, float):
            wrong = [".nan", ".inf", "-.inf", "ten", "[1]", "{"]
        elif isinstance(default, int):
            wrong = ["-1", str(-rng.randint(2, 10 ** 9)), str(2 ** 64 + rng.randint(0, 99)), "1.5", "ten", "{"]
        elif isinstance(default, dict):
            wrong = ["[1]", "{", "3", "{a: [}"]
        elif isinstance(default, list):
            wrong = ["{a: 1}", "[", "3"]
        else:
            wrong = ["a\x00b"]
        out += [(f"{name}={value}", name) for value in rng.sample(wrong, min(3, len(wrong)))]
    return out


@pytest.mark.parametrize("command", [["pipeline", "run"], ["pipeline", "submit", "--host", "http://127.0.0.1:9"]],
                         ids=["run", "submit"])
def test_pipeline_parameters_of_the_wrong_kind_are_refused_naming_them(command, tmp_path, tripwires):
    problems = []
    for pair, named in pipeline_param_cases(len(command)):
        result = invoke(command + ["-p", pair], tmp_path)
        shown = f"daic {' '.join(command)} -p {pair!r}"
        if isinstance(result.exception, Reached) or result.exit_code == 0:
            problems.append(f"{shown}: accepted")
        elif result.exception is not None and not isinstance(result.exception, SystemExit):
            problems.append(f"{shown}: {type(result.exception).__name__}: {result.exception}")
        elif "--param" not in result.output or named not in result.output:
            problems.append(f"{shown}: the error does not name --param and {named}: {result.output[-200:]!r}")
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems)


def test_pipeline_parameters_of_the_right_kind_are_taken(tmp_path, tripwires):
    """The checks above refuse by kind, not everything: a typed value of each kind reaches the run."""
    for pair in ["budget=300", "threshold=0.9", "trigger_estimate=-1", "show_model_answer=true",
                 "train_node_selector={gpu: a100}", "train_tolerations=[]", "label_studio_url=http://ls:8080",
                 "since=2024-01-01T00:00:00Z", "sampler_params={}", "cycle_id=c-1"]:
        result = invoke(["pipeline", "run", "-p", pair], tmp_path)
        assert isinstance(result.exception, Reached), (pair, result.output)
