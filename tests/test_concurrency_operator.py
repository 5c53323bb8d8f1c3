"""Two reconcilers of one AssessmentCycle at once (two operator replicas, or an operator restarted
while the old one still runs), against the real kube-apiserver (tests/cluster).

Each pass reads the object, decides, and writes the status through the ``/status`` subresource as a
merge patch carrying the resourceVersion it read (operators/kube.py). A pass that read before the
other's write is stale: its patch must be refused (409) and the newer status must stand; and a
pass whose status write is refused must not act (run_pass persists before it executes).
"""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest

from cluster.fixtures import kube  # noqa: F401 - fixture
from daic.operators.kube import StatusWriter
from daic.operators.spec import GROUP, KIND, PLURAL, VERSION
from daic.operators.status import CycleStatus, Phase
from fakes.crd_schema import minimal_spec


@pytest.fixture
def cycle(kube):  # noqa: F811 - the fixture above
    ns = kube.namespace("conc")
    name = f"c-{uuid.uuid4().hex[:8]}"
    kube.custom().create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
        "metadata": {"name": name, "namespace": ns}, "spec": minimal_spec()})
    return kube.custom(), ns, name


def _read(api, ns, name):
    return api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)


def test_a_stale_reconcilers_status_write_is_refused_and_the_newer_status_stands(cycle):
    """A and B read the same version; B writes first (awaiting approval, cycle 1); A's write of what
    it decided from the old version (monitoring, cycle 0) gets 409 and changes nothing."""
    import kubernetes

    api, ns, name = cycle
    seen_a, seen_b = _read(api, ns, name), _read(api, ns, name)
    rv = seen_a["metadata"]["resourceVersion"]
    assert seen_b["metadata"]["resourceVersion"] == rv
    newer = CycleStatus(phase=Phase.awaiting_approval, reason="ChallengerBetter", cycle_count=1)
    StatusWriter(api, ns, name, seen_b["metadata"]["resourceVersion"])(newer)
    stale = CycleStatus(phase=Phase.monitoring, reason="Created", cycle_count=0)
    with pytest.raises(kubernetes.client.ApiException) as info:
        StatusWriter(api, ns, name, rv)(stale)
    assert info.value.status == 409
    stored = CycleStatus.from_wire(_read(api, ns, name)["status"])
    assert (stored.phase, stored.reason, stored.cycle_count) == (Phase.awaiting_approval, "ChallengerBetter", 1)


def test_a_pass_whose_status_write_is_refused_takes_no_action(cycle):
    """The whole pass (driver.run_pass) of a stale reconciler: its decision (start a run) is not
    executed when its status write is refused; the fresh reconciler's stands."""
    import kubernetes

    from daic.operators.actions import StartRun
    from daic.operators.driver import run_pass
    from daic.operators.observations import EstimateReading
    from daic.operators.reconcile import CycleIdentity
    from daic.operators.status import CycleStatus as Status

    api, ns, name = cycle
    obj = _read(api, ns, name)
    meta = obj["metadata"]
    ident = CycleIdentity(name=name, uid=meta["uid"], namespace=ns, generation=int(meta.get("generation") or 1))
    submitted: list[str] = []

    class Runner:
        def submit(self, run_name, params):
            submitted.append(run_name)

        def get(self, run_name):
            raise AssertionError("no run to read")

        def cancel(self, run_name):
            pass

    class Estimate:
        def read(self, now):
            return EstimateReading(accuracy=0.10, n=500, observed_at=now, lower=0.05, upper=0.15)

    emitted: list[str] = []

    class Sink:
        def emit(self, event):
            emitted.append(event.reason)

    def ports(spec):
        from daic.operators.driver import Ports

        return Ports(estimate=Estimate(), runner=Runner(), deployment=None, records=object())

    # The other reconciler writes first (a newer status), from the same version this pass read.
    StatusWriter(api, ns, name, meta["resourceVersion"])(Status(phase=Phase.monitoring, reason="OtherReplica"))
    now = datetime.now(timezone.utc)
    with pytest.raises(kubernetes.client.ApiException) as info:  # this pass decides to start a run
        run_pass(ident, obj.get("spec"), obj.get("status"), {}, ports, Sink(),
                 StatusWriter(api, ns, name, meta["resourceVersion"]), now)
    assert info.value.status == 409
    assert submitted == [] and emitted == []
    assert CycleStatus.from_wire(_read(api, ns, name)["status"]).reason == "OtherReplica"
    # the same pass from the version now stored does start the run: the refusal above is what stopped it
    fresh = _read(api, ns, name)
    result = run_pass(ident, fresh.get("spec"), fresh.get("status"), {}, ports, Sink(),
                      StatusWriter(api, ns, name, fresh["metadata"]["resourceVersion"]), now)
    assert any(isinstance(a, StartRun) for a in result.actions) and len(submitted) == 1
