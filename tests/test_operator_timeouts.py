"""Every HTTP call the operator makes is bounded, and kopf's handlers have retry limits and backoff.

A "black hole" is a real listening socket that never accepts: the kernel completes the TCP
handshake, the request is sent, and no byte ever comes back - what a hung API server, KFP or a
frozen node looks like to a client. Each call runs in a thread that the test waits for with a
generous bound, so without a timeout the test fails (instead of hanging the suite).
"""
from __future__ import annotations


import kopf
import pytest

from daic.components.testing.black_hole import never_answering_server, returns_within
from daic.operators.handlers import Operator, OperatorConfig, build_registry
from daic.operators.kube import StatusWriter
from daic.operators.runners.kfp_runner import KfpRunner
from daic.operators.seldon import SeldonTarget
from daic.operators.status import CycleStatus
from daic.storage import open_store

BOUND = (1.0, 1.0)  # (connect, read) seconds given to the clients under test


@pytest.fixture
def black_hole():
    with never_answering_server() as url:
        yield url


def _custom_objects(url: str):
    import kubernetes

    config = kubernetes.client.Configuration()
    config.host = url
    return kubernetes.client.CustomObjectsApi(kubernetes.client.ApiClient(config))


def test_seldon_reads_and_patches_are_bounded(black_hole):
    from daic.operators.actions import PatchDeployment

    target = SeldonTarget(_custom_objects(black_hole), "default", "mnist", "default", timeout=BOUND)
    elapsed, error, _ = returns_within(20, lambda: target.observe(None))
    assert error is not None and elapsed < 10
    elapsed, error, _ = returns_within(20, lambda: target.apply(PatchDeployment("mnist", "default", "default", "v1")))
    assert error is not None and elapsed < 10


def test_status_writes_are_bounded(black_hole):
    writer = StatusWriter(_custom_objects(black_hole), "default", "demo", "1", timeout=BOUND)
    elapsed, error, _ = returns_within(20, lambda: writer(CycleStatus()))
    assert error is not None and elapsed < 10


def test_kfp_calls_are_bounded_and_not_retried_for_minutes(black_hole, tmp_path):
    """kfp.Client alone: no timeout, five healthz attempts 5 s apart, three read retries per call."""
    runner = KfpRunner(open_store(f"file://{tmp_path}"), host=black_hole, timeout=BOUND)
    elapsed, error, _ = returns_within(30, lambda: runner.get("demo-c1-0f1e2d3c"))
    assert error is not None and elapsed < 10
    elapsed, error, _ = returns_within(30, lambda: runner.cancel("demo-c1-0f1e2d3c"))
    assert error is not None and elapsed < 10


def test_the_operators_fresh_read_before_each_pass_is_bounded(black_hole):
    op = Operator(OperatorConfig(api_timeout=1.0))
    op._api = _custom_objects(black_hole)
    elapsed, error, _ = returns_within(20, lambda: op.reconcile("default", "demo"))
    assert error is not None and elapsed < 10


def test_operator_bounds_come_from_the_environment_and_are_validated(monkeypatch):
    monkeypatch.setenv("DAIC_OPERATOR_API_TIMEOUT", "7")
    monkeypatch.setenv("DAIC_OPERATOR_HANDLER_RETRIES", "2")
    config = OperatorConfig.from_env()
    assert config.request_timeout == (5.0, 7.0) and config.handler_retries == 2
    monkeypatch.setenv("DAIC_OPERATOR_API_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="DAIC_OPERATOR_API_TIMEOUT"):
        OperatorConfig.from_env()
    with pytest.raises(ValueError, match="DAIC_OPERATOR_HANDLER_BACKOFF"):
        OperatorConfig(handler_backoff=0)


def test_kopf_handlers_have_timeouts_retry_limits_and_backoff_and_kopfs_requests_are_bounded():
    config = OperatorConfig(api_timeout=12.0, handler_timeout=200.0, handler_retries=4, handler_backoff=20.0)
    registry, _ = build_registry(config)
    changing = registry._changing.get_all_handlers()
    assert changing
    for handler in changing:  # create, resume, update, delete
        assert (handler.timeout, handler.retries, handler.backoff) == (200.0, 4, 20.0), handler.id
    (timer,) = registry._spawning.get_all_handlers()
    assert timer.timeout == 200.0 and timer.backoff == 20.0
    settings = kopf.OperatorSettings()
    (startup, *_) = [h for h in registry._activities.get_all_handlers() if "configure" in h.id]
    startup.fn(settings=settings)
    assert settings.networking.request_timeout == 12.0 and settings.networking.connect_timeout == 5.0
    assert settings.watching.connect_timeout == 5.0
    assert settings.watching.client_timeout == settings.watching.server_timeout + 60
