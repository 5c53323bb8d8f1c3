"""A CLI error, not a traceback: a local path a command cannot write, and a Kubeflow Pipelines API
that is not an http(s) URL, refuses, hangs or answers an error status.

Kubeflow Pipelines cannot run here: its failures are played at the HTTP boundary by a closed port,
a "black hole" (a listening socket that never accepts: the handshake completes, no byte comes back)
and a one-handler HTTP server answering 503, each talked to by the real ``kfp.Client``.
"""
from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from daic.cli import main
from daic.components.testing.black_hole import never_answering_server, returns_within
from daic.components.testing.http_reply import send_json


def _invoke(args: list[str], tmp_path) -> tuple[int, str, BaseException | None]:
    result = CliRunner().invoke(main, args, env={"DAIC_STORE": f"file://{tmp_path}/store"})
    return result.exit_code, result.output, result.exception


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "a-file"
    path.write_text("not a folder")
    return path


@pytest.mark.parametrize("args", [
    ["report", "--out", "{blocked}"],
    ["data", "show", "--corruption", "fog", "--out", "{blocked}/show.png"],
    ["pipeline", "compile", "--out-dir", "{blocked}"],
    ["serve", "manifest", "--out", "{blocked}/sd.yaml"],
], ids=["report", "data-show", "pipeline-compile", "serve-manifest"])
def test_an_output_path_under_a_file_is_a_one_line_error_naming_it(args, a_file, tmp_path):
    blocked = a_file / "sub"
    code, output, exc = _invoke([a.format(blocked=blocked) for a in args], tmp_path)
    assert code == 1, output
    assert isinstance(exc, SystemExit), f"a traceback, not a CLI error: {exc!r}"
    last = output.strip().splitlines()[-1]
    assert last.startswith("Error: ") and str(a_file) in last, output
    assert "Traceback" not in output


def test_an_os_error_without_a_path_is_not_turned_into_a_cli_error(monkeypatch, tmp_path):
    """Only path errors are the user's to fix; a socket error under a command is a bug to show."""
    import daic.commands.store as store_cmd

    def broken(*args, **kwargs):
        raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(store_cmd, "open_store", broken)
    code, output, exc = _invoke(["store", "ls"], tmp_path)
    assert isinstance(exc, ConnectionResetError), (code, output)


@pytest.mark.parametrize("command", ["submit", "upload"])
@pytest.mark.parametrize("host", ["ftp://kfp:8888", "localhost:8888", "http://", "not a url"])
def test_a_host_that_is_not_an_http_url_is_refused_naming_the_option(command, host, tmp_path):
    code, output, exc = _invoke(["pipeline", command, "--host", host], tmp_path)
    assert code == 2, output
    assert "--host" in output and "http" in output


@pytest.fixture
def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def black_hole():
    with never_answering_server() as url:
        yield url


@pytest.fixture
def unavailable_kfp():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            send_json(self, 503, {"error": "ml-pipeline is starting", "code": 14})

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("command", ["submit", "upload"])
def test_a_refused_kfp_is_a_one_line_error_naming_the_host(command, closed_port, tmp_path):
    code, output, exc = _invoke(["pipeline", command, "--host", closed_port], tmp_path)
    assert code == 1 and isinstance(exc, SystemExit), (output, exc)
    assert f"cannot reach Kubeflow Pipelines at {closed_port}" in output and "Traceback" not in output


@pytest.mark.parametrize("command", ["submit", "upload"])
def test_an_error_status_from_kfp_is_reported_with_its_body(command, unavailable_kfp, tmp_path):
    code, output, exc = _invoke(["pipeline", command, "--host", unavailable_kfp], tmp_path)
    assert code == 1 and isinstance(exc, SystemExit), (output, exc)
    assert f"Kubeflow Pipelines at {unavailable_kfp} answered HTTP 503" in output
    assert "ml-pipeline is starting" in output


def test_a_hung_kfp_fails_within_the_bound(monkeypatch, black_hole, tmp_path):
    """kfp.Client alone would wait for ever on a server that never answers (no timeout on any call)."""
    import daic.pipelines.kfp_client as kfp_client

    monkeypatch.setattr(kfp_client, "KFP_TIMEOUT", (1.0, 1.0))
    outcome = returns_within(30, lambda: _invoke(["pipeline", "submit", "--host", black_hole], tmp_path))
    code, output, exc = outcome.value
    assert code == 1 and f"cannot reach Kubeflow Pipelines at {black_hole}" in output, (output, exc)
    assert outcome.elapsed < 15
