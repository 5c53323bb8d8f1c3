"""The operator acting on the filter remedy (issue 21), in the pure reconcile function: the
fit-filter record read mid-run decides (decide_remedy), the filter goes in like a challenger
(canary of the champion behind it, then the whole predictor; a failing canary rolls back), the
challenger is held to the wrapped champion, a promotion takes the filter out, and so does clean
traffic between cycles. Every status is also checked against the CRD's schema."""
from __future__ import annotations

import pytest

from daic.components.testing.fake_kube import merge_patch
from daic.operators.actions import EmitEvent, PatchDeployment
from daic.operators.kube import status_patch
from daic.operators.observations import DeploymentReading, FilterRecord, Observations, RunPhase
from daic.operators.status import CycleStatus, Decision, FilterRollout, Phase
from fakes.crd_schema import crd_schema, minimal_spec, validate
from fakes.world import GOOD_RESULT, at, make_spec, reading, run_obs, step

SCHEMA = crd_schema()
RECORD = {"champion_accuracy": 0.70, "filter_accuracy": 0.86, "filter_version": "v0003", "gate": "always",
          "filter_holdout_accuracy": 0.90, "decision": "deploy"}


def reasons(actions) -> list[str]:
    return [a.reason for a in actions if isinstance(a, EmitEvent)]


def patches(actions) -> list[PatchDeployment]:
    return [a for a in actions if isinstance(a, PatchDeployment)]


def fits_crd(status: CycleStatus) -> None:
    stored = merge_patch({}, status_patch(status, None))
    problems = validate({"apiVersion": "daic.dev/v1alpha1", "kind": "AssessmentCycle", "metadata": {"name": "d"},
                         "spec": minimal_spec(),
                         **stored}, SCHEMA)
    assert not problems, problems


class Play:
    """Steps a spec through reconcile passes, keeping the status and the last actions."""

    def __init__(self, spec):
        self.spec, self.status, self.actions = spec, CycleStatus(), ()

    def __call__(self, t: float, **obs) -> "Play":
        out = step(self.spec, self.status, t, Observations(**obs))
        self.status, self.actions = out.status, out.actions
        fits_crd(self.status)
        return self

    @property
    def run(self) -> str:
        return self.status.current.run_name

    def start_cycle(self) -> "Play":
        self(1, estimate=reading(0.97, 1))(2, estimate=reading(0.80, 2))
        assert self.status.phase is Phase.assessing
        return self

    def record(self, t: float, record=RECORD) -> "Play":
        return self(t, runs=(run_obs(self.run, RunPhase.running, t, "train"),),
                    filter_record=FilterRecord(self.run, record, at(t)))


def test_the_filter_goes_in_as_a_canary_while_the_run_trains_then_the_challenger_must_beat_it():
    play = Play(make_spec(promotion={"canaryShare": 10, "canarySeconds": 60})).start_cycle()
    assert play.status.current.params["remedy"] == "both"  # the pipeline runs fit-filter and train
    play.record(3)
    rem = play.status.current.remedy
    assert (rem.decision, rem.retrain, rem.compare_to, rem.rollout) == ("deploy", True, "wrapped-champion",
                                                                        FilterRollout.canary)
    assert "champion+filter 0.8600 beats champion 0.7000" in rem.reason and "RemedyDecided" in reasons(play.actions)
    (want,) = patches(play.actions)  # the champion behind the filter takes the canary's share
    assert (want.champion_version, want.canary_version, want.canary_share) == ("v1", "v1", 10)
    assert (want.filter_version, want.canary_filter_version, want.canary_filter_gate) == (None, "v0003", "always")
    play(4, deployment=DeploymentReading("v1", "v1", 10, at(4), None, "v0003"))
    assert "FilterCanaryServing" in reasons(play.actions) and not patches(play.actions)
    play(70)  # canary held for canarySeconds: the whole predictor gets the filter
    (want,) = patches(play.actions)
    assert (want.champion_version, want.canary_version, want.filter_version, want.filter_gate) == \
        ("v1", None, "v0003", "always")
    play(71, deployment=DeploymentReading("v1", None, 0, at(71), "v0003"))
    assert "FilterDeployed" in reasons(play.actions)
    assert (play.status.filter.version, play.status.filter.wraps, play.status.filter.gate) == ("v0003", "v1", "always")
    assert play.status.phase is Phase.improving, "retraining goes on meanwhile"
    served = next(c for c in play.status.conditions if c.type == "FilterServing")
    assert served.status == "True" and "v0003" in served.message

    # A challenger better than the champion (0.82) but not than champion+filter on held-out (0.90).
    play(80, runs=(run_obs(play.run, RunPhase.succeeded, 80, None, {**GOOD_RESULT, "challenger_accuracy": 0.88}),))
    (entry,) = play.status.history
    assert entry.decision is Decision.challenger_not_better and "vs champion v1+filter v0003 0.9000" in entry.message
    assert (entry.remedy, entry.filter_outcome, entry.filter_version) == ("deploy", "deployed", "v0003")
    assert play.status.filter.version == "v0003", "the filter keeps serving"


def test_promoting_the_challenger_takes_the_filter_out():
    play = Play(make_spec(promotion={"canaryShare": 0})).start_cycle().record(3)
    (want,) = patches(play.actions)  # no canary share: straight in
    assert (want.canary_version, want.filter_version) == (None, "v0003")
    play(4, deployment=DeploymentReading("v1", None, 0, at(4), "v0003"))
    assert play.status.filter is not None
    play(5, runs=(run_obs(play.run, RunPhase.succeeded, 5, None, {**GOOD_RESULT, "challenger_accuracy": 0.95}),))
    (want,) = patches(play.actions)
    assert (want.champion_version, want.filter_version) == ("v2", None), "the challenger goes in without the filter"
    play(6, deployment=DeploymentReading("v2", None, 0, at(6)))
    assert "FilterRemoved" in reasons(play.actions) and play.status.filter is None
    (entry,) = play.status.history
    assert entry.decision is Decision.promoted and entry.filter_outcome == "removed-at-promotion"


FILTERED = {**GOOD_RESULT, "challenger_accuracy": 0.96, "challenger_alone_accuracy": 0.89,
            "challenger_filter_accuracy": 0.96, "wrapped_champion_holdout_accuracy": 0.91,
            "challenger_filter_version": "v0005", "challenger_filter_gate": "always", "serve": "challenger+filter"}


def test_the_challenger_behind_the_filter_goes_in_with_its_own_filter_canary_first():
    play = Play(make_spec(promotion={"canaryShare": 10, "canarySeconds": 60})).start_cycle().record(3)
    play(4, deployment=DeploymentReading("v1", "v1", 10, at(4), None, "v0003"))(70)
    play(71, deployment=DeploymentReading("v1", None, 0, at(71), "v0003"))
    play(80, runs=(run_obs(play.run, RunPhase.succeeded, 80, None, FILTERED),))
    rem = play.status.current.remedy
    assert rem.serve == "challenger+filter" and "challenger+filter 0.9600 > challenger alone 0.8900" in rem.serve_reason
    assert "beats champion+filter 0.9100" in rem.serve_reason  # the evaluation's design estimate of what serves
    (want,) = patches(play.actions)  # the canary is the challenger behind its filter
    assert (want.champion_version, want.filter_version, want.canary_version, want.canary_filter_version,
            want.canary_filter_gate) == ("v1", "v0003", "v2", "v0005", "always")
    play(81, deployment=DeploymentReading("v1", "v2", 10, at(81), "v0003", "v0005"))(150)
    (want,) = patches(play.actions)
    assert (want.champion_version, want.canary_version, want.filter_version, want.filter_gate) == \
        ("v2", None, "v0005", "always")
    play(151, deployment=DeploymentReading("v2", None, 0, at(151), "v0005"))
    assert "FilterDeployed" in reasons(play.actions) and "FilterRemoved" not in reasons(play.actions)
    assert (play.status.filter.version, play.status.filter.wraps, play.status.filter.gate) == ("v0005", "v2", "always")
    (entry,) = play.status.history
    assert (entry.decision, entry.filter_outcome, entry.serve) == (Decision.promoted, "moved-to-challenger",
                                                                   "challenger+filter")


def test_the_wrapped_champion_stays_when_no_challenger_variant_beats_it():
    play = Play(make_spec(promotion={"canaryShare": 0})).start_cycle().record(3)
    play(4, deployment=DeploymentReading("v1", None, 0, at(4), "v0003"))
    result = {**FILTERED, "challenger_accuracy": 0.90, "challenger_filter_accuracy": 0.90,
              "challenger_alone_accuracy": 0.85}
    play(5, runs=(run_obs(play.run, RunPhase.succeeded, 5, None, result),))
    (entry,) = play.status.history
    assert entry.decision is Decision.challenger_not_better and entry.serve == "champion+filter"
    assert "champion+filter keeps serving" in entry.serve_reason and not patches(play.actions)
    assert play.status.filter.version == "v0003"


def test_the_challenger_alone_wins_where_the_filter_costs_it():
    play = Play(make_spec(promotion={"canaryShare": 0})).start_cycle().record(3)
    play(4, deployment=DeploymentReading("v1", None, 0, at(4), "v0003"))
    result = {**GOOD_RESULT, "challenger_accuracy": 0.97, "challenger_alone_accuracy": 0.97,
              "challenger_filter_accuracy": 0.93, "wrapped_champion_holdout_accuracy": 0.91, "serve": "challenger"}
    play(5, runs=(run_obs(play.run, RunPhase.succeeded, 5, None, result),))
    (want,) = patches(play.actions)
    assert (want.champion_version, want.filter_version) == ("v2", None)
    assert play.status.current.remedy.serve == "challenger"
    play(6, deployment=DeploymentReading("v2", None, 0, at(6)))
    assert play.status.filter is None and play.status.history[0].filter_outcome == "removed-at-promotion"


def test_a_challenger_canary_keeps_the_filter_on_the_main_predictor_and_a_rollback_keeps_it():
    play = Play(make_spec(promotion={"canaryShare": 10, "canarySeconds": 60})).start_cycle().record(3)
    play(4, deployment=DeploymentReading("v1", "v1", 10, at(4), None, "v0003"))(70)
    play(71, deployment=DeploymentReading("v1", None, 0, at(71), "v0003"))
    play(80, runs=(run_obs(play.run, RunPhase.succeeded, 80, None, {**GOOD_RESULT, "challenger_accuracy": 0.95}),))
    (want,) = patches(play.actions)
    assert (want.champion_version, want.filter_version, want.canary_version, want.canary_filter_version) == \
        ("v1", "v0003", "v2", None)
    play(81, deployment=DeploymentReading("v1", "v2", 10, at(81), "v0003"),
         canary_estimate=reading(0.5, 82, model_version="v2"))
    play(83, deployment=DeploymentReading("v1", "v2", 10, at(83), "v0003"),
         canary_estimate=reading(0.5, 84, model_version="v2"))
    (want,) = patches(play.actions)
    assert (want.champion_version, want.canary_version, want.filter_version) == ("v1", None, "v0003")


def test_a_filter_canary_below_the_threshold_rolls_back_and_the_challenger_faces_the_champion():
    play = Play(make_spec(promotion={"canaryShare": 10, "canarySeconds": 600})).start_cycle().record(3)
    play(4, deployment=DeploymentReading("v1", "v1", 10, at(4), None, "v0003"))
    play(5, deployment=DeploymentReading("v1", "v1", 10, at(5), None, "v0003"), canary_estimate=reading(0.6, 6))
    assert "FilterCanaryRollback" in reasons(play.actions)
    (want,) = patches(play.actions)
    assert (want.canary_version, want.filter_version) == (None, None)
    play(7, deployment=DeploymentReading("v1", None, 0, at(7)))
    assert play.status.current.remedy.outcome == "rolled-back" and play.status.filter is None
    play(8, runs=(run_obs(play.run, RunPhase.succeeded, 8, None, {**GOOD_RESULT, "challenger_accuracy": 0.88}),))
    assert play.status.current.challenger_version == "v2" and "beats champion v1" in play.status.message


def test_the_challenger_waits_for_the_filter_rollout():
    play = Play(make_spec(promotion={"canaryShare": 10, "canarySeconds": 600})).start_cycle().record(3)
    play(4, runs=(run_obs(play.run, RunPhase.succeeded, 4, None, GOOD_RESULT),),
         deployment=DeploymentReading("v1", "v1", 10, at(4), None, "v0003"))
    assert play.status.phase is Phase.improving and play.status.current.remedy.rollout is FilterRollout.canary
    assert not play.status.history


@pytest.mark.parametrize("remedy,record,decision,retrain", [
    ("both", {**RECORD, "filter_accuracy": 0.65}, "none", True),      # the filter does not help
    ("filter", RECORD, "deploy", False),
    ("retrain", RECORD, "none", True),                               # retrain only: no filter
])
def test_each_spec_remedy_decides_its_row(remedy, record, decision, retrain):
    play = Play(make_spec(remedy=remedy, promotion={"canaryShare": 0})).start_cycle().record(3, record)
    rem = play.status.current.remedy
    assert (rem.decision, rem.retrain) == (decision, retrain)
    assert bool(patches(play.actions)) == (decision == "deploy")


def test_the_run_result_decides_when_no_record_was_seen_and_an_unconfirmed_drop_keeps_the_filter():
    play = Play(make_spec(promotion={"canaryShare": 0})).start_cycle()
    result = {**GOOD_RESULT, "filter_champion_accuracy": 0.7, "filter_accuracy": 0.8, "filter_version": "v0004",
              "filter_gate": "gated", "challenger_accuracy": 0.95}
    play(3, runs=(run_obs(play.run, RunPhase.succeeded, 3, None, result),))
    assert play.status.current.remedy.decision == "deploy" and play.status.phase is Phase.assessing
    play(4, deployment=DeploymentReading("v1", None, 0, at(4), "v0004"),
         runs=(run_obs(play.run, RunPhase.succeeded, 4, None, result),))  # the driver polls the run each pass
    assert play.status.filter.version == "v0004"
    assert play.status.phase is Phase.promoting  # then the challenger (0.95 > 0.8) goes in

    keep = Play(make_spec(promotion={"canaryShare": 0}))
    keep.status = keep.status.model_copy(update={"filter": _served("v0009")})
    keep.start_cycle()
    keep(3, runs=(run_obs(keep.run, RunPhase.succeeded, 3, None, {**GOOD_RESULT, "drop_confirmed": False}),))
    (entry,) = keep.status.history
    assert (entry.decision, entry.remedy, entry.filter_outcome) == (Decision.drop_not_confirmed, "keep", "kept")
    assert keep.status.filter.version == "v0009" and not patches(keep.actions)


def _served(version: str):
    from daic.operators.status import ServedFilter

    return ServedFilter(version=version, gate="gated", wraps="v1", cycle=1, since=at(0), reason="test")


def test_clean_traffic_between_cycles_takes_the_filter_out():
    play = Play(make_spec(trigger={"consecutive": 2}))
    play.status = play.status.model_copy(update={"filter": _served("v0003")})
    play(1, estimate=reading(0.96, 1, drift_alarm=True))  # accurate but still drifted inputs: the filter stays
    assert play.status.filter.clean_count == 0 and not patches(play.actions)
    play(2, estimate=reading(0.97, 2))
    assert play.status.filter.clean_count == 1 and not patches(play.actions)
    play(3, estimate=reading(0.97, 3))
    assert "FilterRemoving" in reasons(play.actions)
    (want,) = patches(play.actions)
    assert (want.champion_version, want.filter_version, want.canary_version) == ("v1", None, None)
    play(4, deployment=DeploymentReading("v1", None, 0, at(4)))
    assert "FilterRemoved" in reasons(play.actions) and play.status.filter is None
    assert next(c for c in play.status.conditions if c.type == "FilterServing").status == "False"


def test_a_failed_fit_filter_step_is_named_in_the_decision():
    play = Play(make_spec(promotion={"canaryShare": 0})).start_cycle()
    play.record(3, {"decision": "none", "champion_accuracy": None, "filter_accuracy": None,
                    "error": "RuntimeError: Ray could not start"})
    rem = play.status.current.remedy
    assert (rem.decision, rem.retrain, rem.outcome) == ("none", True, "none")
    assert rem.reason.endswith("(the fit-filter step failed: RuntimeError: Ray could not start)")
    assert not patches(play.actions)
