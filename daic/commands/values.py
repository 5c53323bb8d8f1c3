"""Click types for the values ``daic`` options take, so a nonsense value is refused where it is
parsed, as click's "Invalid value for '--x'", instead of surfacing later as a traceback, a hang
or a quietly odd result.

Why not click's own types alone: ``click.FloatRange`` lets NaN through (every comparison with NaN
is false) and infinity through when there is no maximum; ``click.INT`` takes any Python int, so
``--seed 18446744073709551616`` overflows numpy and ``--pool-size 10**12`` tries to allocate it;
``click.STRING`` and ``click.Path`` take a NUL byte, which the OS, the object store or an HTTP
header then refuse with a traceback. ``tests/test_cli_fuzz.py`` walks every option and checks
that each refuses such values, so an option declared with a bare ``int``/``float``/``str`` shows up there.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import click

#: Largest count, size or limit any option takes unless it says otherwise: far above anything
#: sensible, and below every int64/int32 overflow in numpy, torch and the KFP protobufs.
MAX_COUNT = 2**31 - 1


def count(min: int = 0, max: int = MAX_COUNT) -> click.IntRange:  # noqa: A002 - click's names
    """A whole number in [min, max] (a count, size, limit or number of seconds)."""
    return click.IntRange(min, max)


#: A random seed (numpy and torch both take it).
SEED = click.IntRange(0, 2**32 - 1)
#: A TCP port to listen on or talk to.
PORT = click.IntRange(1, 65535)


class FiniteFloat(click.FloatRange):
    """A real number in a range, never NaN or infinite (``1e999`` parses to infinity)."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rv = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(rv, param, ctx)


def number(min: float | None = 0.0, max: float | None = None, min_open: bool = False,  # noqa: A002
           max_open: bool = False) -> FiniteFloat:
    """A finite real number, by default non-negative (every float option here is a duration,
    a share, a weight, a threshold or a time)."""
    return FiniteFloat(min, max, min_open=min_open, max_open=max_open)


class Text(click.ParamType):
    """A string without a NUL byte, at most ``max_len`` long, optionally checked by ``check``
    (a ValueError is the message shown). Newlines are left to ``check``: free text such as a
    description or a JSON graph may span lines; every name's pattern refuses them."""

    name = "text"

    def __init__(self, check: Callable[[str], Any] | None = None, max_len: int = 4096,
                 allow_empty: bool = True) -> None:
        self.check = check
        self.max_len = max_len
        self.allow_empty = allow_empty

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        if "\x00" in value:
            self.fail(f"{value[:40]!r} contains a NUL byte", param, ctx)
        if len(value) > self.max_len:
            self.fail(f"{value[:40]!r}... is {len(value)} characters long, at most {self.max_len}", param, ctx)
        if not value and not self.allow_empty:
            self.fail("must not be empty", param, ctx)
        if self.check is not None:
            try:
                self.check(value)
            except ValueError as exc:
                self.fail(str(exc), param, ctx)
        return value


def _checked(pattern: str, what: str) -> Callable[[str], str]:
    regex = re.compile(pattern)

    def check(value: str) -> str:
        if not regex.match(value):
            raise ValueError(f"invalid {what} {value!r}")
        return value

    return check


def _model_name(value: str) -> str:
    from daic.models.card import check_name

    return check_name(value)


def _cycle(value: str) -> str:
    from daic.sampling.record import check_cycle

    return check_cycle(value)


def _version_ref(value: str) -> str:
    if value in ("champion", "latest"):
        return value
    from daic.models.card import check_version

    try:
        return check_version(value)
    except ValueError as exc:
        raise ValueError(f"{exc}, 'champion' or 'latest'") from None


def _version(value: str) -> str:
    from daic.models.card import check_version

    return check_version(value)


def _served_version(value: str) -> str:
    if value == "champion":
        return value
    try:
        return _version(value)
    except ValueError as exc:
        raise ValueError(f"{exc}, or 'champion' (follow the registry's champion)") from None


def _expected_version(value: str) -> str:
    return value if value == "none" else _version(value)


def _deployment(value: str) -> str:
    from daic.sidecar.records import check_deployment

    check_deployment(value)  # the sidecar's own rule (no '/', not '.' or '..'), in its words
    return _checked(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
                    "deployment (1-63 letters, digits and ._-, starting with a letter or digit)")(value)


def _http_url(value: str) -> str:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or re.search(r"[\s\x00-\x1f\x7f]", value):
        raise ValueError(f"{value!r} is not an http(s)://host[:port] URL")
    return value


_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def _bind_host(value: str) -> str:
    """An address to listen on: an IPv4 or IPv6 literal, or a host name (RFC 1123 labels, at most
    253 characters). Anything else failed later, at bind time, with a resolver traceback."""
    import ipaddress

    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if len(value) <= 253 and all(_HOST_LABEL.match(label) for label in value.split(".")):
        return value
    raise ValueError(f"{value!r} is not an IP address or a host name to listen on (e.g. 127.0.0.1, 0.0.0.0, ::1)")


def _store_url(value: str) -> str:
    """A URL ``daic.storage.open_store`` accepts (its own check, nothing opened), without whitespace."""
    from daic.storage import StorageError, check_url

    try:
        check_url(value)
    except StorageError as exc:
        raise ValueError(f"{exc}") from None
    if re.search(r"\s", value):
        raise ValueError(f"{value!r} is not a store URL: it holds whitespace")
    return value


def _key_prefix(value: str) -> str:
    """An object-store prefix: empty (everything), or a key with an optional trailing '/'."""
    from daic.storage.base import check_prefix

    return check_prefix(value)


def _key(value: str) -> str:
    from daic.storage.base import check_key

    return check_key(value)


#: Model names in the registry (``models/<name>/``).
MODEL_NAME = Text(_model_name, max_len=63)
#: A model version reference: ``champion``, ``latest`` or an id such as ``v0003``.
VERSION_REF = Text(_version_ref, max_len=32)
#: A version id (``v0003``), and the same or ``none`` (for a compare-and-set's expected value).
VERSION = Text(_version, max_len=32)
EXPECTED_VERSION = Text(_expected_version, max_len=32)
#: What a model server serves: ``champion`` (follow the pointer) or a pinned version id.
SERVED_VERSION = Text(_served_version, max_len=32)
#: A cycle id (``cycles/<cycle>/``).
CYCLE = Text(_cycle, max_len=100)
#: A deployment (``operational/<deployment>/``): also a Kubernetes object's name, so letters,
#: digits and ._- starting with a letter or digit.
DEPLOYMENT = Text(_deployment, max_len=63)
#: A Kubernetes namespace or object name (DNS-1123 label).
DNS_LABEL = Text(_checked(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
                          "name (a DNS-1123 label: lower-case letters, digits and '-', at most 63)"),
                 max_len=63)
#: A run id (``runs/<run>/``): one object-store key segment.
RUN = Text(_checked(r"^[A-Za-z0-9][A-Za-z0-9._=@+-]{0,127}$",
                    "run id (1-128 letters, digits and ._=@+-, starting with a letter or digit)"), max_len=128)
#: An S3 bucket name.
BUCKET = Text(_checked(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
                       "bucket name (3-63 lower-case letters, digits, '.' and '-')"), max_len=63)
#: An http(s) URL (a service this command talks to, or the address a page is reached at).
HTTP_URL = Text(_http_url)
#: An address a server listens on (``--host`` of the serving commands).
BIND_HOST = Text(_bind_host, max_len=253, allow_empty=False)
#: An object-store key, and a prefix of keys.
KEY = Text(_key, max_len=1024)
KEY_PREFIX = Text(_key_prefix, max_len=1024)
#: An object store URL: checked in shape when the command line is parsed, ``file:///path`` or
#: ``s3://bucket/prefix`` (nothing opened), so a bad one is a usage error naming ``--store``, also
#: for the commands that open the store only after long work (serve, the demo, a pipeline run, the
#: controller); not empty, which would silently mean the default store.
STORE_URL = Text(_store_url, allow_empty=False)
#: Any other string an option takes (free text, a URL the store parses, an image name).
TEXT = Text()
#: A name given as free text that must not be empty.
NONEMPTY = Text(allow_empty=False)


class SafePath(click.Path):
    """``click.Path`` that also refuses an empty path and one with a NUL byte (which every OS call
    would refuse with a ValueError traceback)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str):
            if not value:
                self.fail("an empty path", param, ctx)
            if "\x00" in value:
                self.fail(f"{value[:40]!r} contains a NUL byte", param, ctx)
        return super().convert(value, param, ctx)


def invalid_fields(exc: Exception, aliases: dict[str, str] | None = None) -> click.UsageError:
    """A pydantic ValidationError (or a ValueError) from a config built from the options, as a
    usage error naming the options: ``Invalid value for '--epochs': ...``. A field is named by
    the current command's option of the same name, or by ``aliases`` (field -> option)."""
    ctx = click.get_current_context(silent=True)
    options = {p.name: p.opts[0] for p in ctx.command.params if p.opts} if ctx is not None else {}
    options.update(aliases or {})
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return click.UsageError(str(exc), ctx)
    parts = []
    for error in errors():
        msg = str(error["msg"]).removeprefix("Value error, ")
        loc = error.get("loc") or ()
        field = str(loc[0]) if loc else ""
        if not field:
            parts.append(msg)
            continue
        where = options.get(field, "--" + field.replace("_", "-"))
        rest = ".".join(str(p) for p in loc[1:])
        parts.append(f"Invalid value for '{where}'{' (' + rest + ')' if rest else ''}: {msg}")
    return click.UsageError("\n".join(parts), ctx)
