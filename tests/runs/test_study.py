from __future__ import annotations

from collections import Counter
import logging
import os
from pathlib import Path
import signal
import threading
import time

import optuna
from optuna.trial import TrialState
import pytest

import bsopt
from bsopt.runs._study import (
    Interrupted,
    browse_hint,
    close_lost_trials,
    quiet_interrupts,
    signal_of,
    stop_signals,
)


def test_resume_reaches_the_total_instead_of_adding(
    sqlite_url: str, tiny_objective: bsopt.Objective
) -> None:
    study = bsopt.create_study("r", storage=sqlite_url)
    assert bsopt.optimize(study, tiny_objective, trials=3, show_progress_bar=False) == 3
    again = bsopt.create_study("r", storage=sqlite_url)  # a new process would do this
    assert bsopt.optimize(again, tiny_objective, trials=5, show_progress_bar=False) == 2
    assert bsopt.optimize(again, tiny_objective, trials=5, show_progress_bar=False) == 0
    assert len(again.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 5


def test_interrupted_run_resumes_to_the_same_total(
    sqlite_url: str, tiny_objective: bsopt.Objective
) -> None:
    calls = {"n": 0}

    def interrupted(trial: optuna.Trial) -> float:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # what Ctrl-C raises in the middle of a trial
        return tiny_objective(trial)

    study = bsopt.create_study("i", storage=sqlite_url)
    with pytest.raises(KeyboardInterrupt):
        bsopt.optimize(study, interrupted, trials=4, show_progress_bar=False)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL]

    resumed = bsopt.create_study("i", storage=sqlite_url)
    bsopt.optimize(resumed, tiny_objective, trials=4, show_progress_bar=False)
    counts = bsopt.runs._study.count_trials(resumed)
    assert counts["COMPLETE"] + counts["PRUNED"] == 4 and counts["FAIL"] == 1


def test_study_with_the_other_direction_is_refused_and_kept(
    sqlite_url: str, tiny_objective: bsopt.Objective
) -> None:
    study = bsopt.create_study("d", storage=sqlite_url, direction="maximize")
    bsopt.optimize(study, tiny_objective, trials=2, show_progress_bar=False)
    with pytest.raises(
        ValueError,
        match=r"study 'd' already exists .* optimises maximize, "
        r"but direction='minimize' was asked for",
    ):
        bsopt.create_study("d", storage=sqlite_url, direction="minimize")
    kept = optuna.load_study(study_name="d", storage=sqlite_url)
    assert len(kept.trials) == 2 and kept.direction.name == "MAXIMIZE"


def test_bad_study_arguments(sqlite_url: str, tiny_objective: bsopt.Objective) -> None:
    with pytest.raises(ValueError, match=r"study name must be a non-empty string"):
        bsopt.create_study(" ", storage=sqlite_url)
    with pytest.raises(ValueError, match=r"direction must be 'maximize' or 'minimize'"):
        bsopt.create_study("x", storage=sqlite_url, direction="up")  # type: ignore[arg-type]
    study = bsopt.create_study("x", storage=sqlite_url)
    with pytest.raises(ValueError, match=r"trials \(the total to reach\) must be an integer"):
        bsopt.optimize(study, tiny_objective, trials=0)


def test_summary_names_best_params_and_where_data_live(
    sqlite_url: str, tiny_objective: bsopt.Objective
) -> None:
    study = bsopt.create_study("s", storage=sqlite_url)
    bsopt.optimize(study, tiny_objective, trials=2, show_progress_bar=False)
    text = bsopt.runs.summary(study, storage_url=sqlite_url)
    best = study.best_trial
    assert f"Best trial #{best.number}: validation accuracy {best.value:.4f}" in text
    assert f"batch_size     {2 ** best.params['log2_batch_size']}" in text
    assert "log2_batch_size" not in text
    assert f"optuna-dashboard {sqlite_url}" in text


# --- seeded resume: the search goes on, it is not replayed ---------------------------------


def _configurations(study: optuna.Study) -> list[tuple[object, ...]]:
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    return [tuple(sorted(t.params.items())) for t in finished]


def _cheap(objective: bsopt.Objective) -> object:
    """Draws the objective's params and trains nothing: the sampler is what is tested."""

    def drawn(trial: optuna.Trial) -> float:
        return objective.space.suggest(trial).lr

    return drawn


def _seeded_run(
    url: str, name: str, objective: bsopt.Objective, *, seed: int, trials: int
) -> optuna.Study:
    """Create (or resume) the seeded study ``name`` and run it to ``trials`` draws."""
    study = bsopt.create_study(name, storage=url, seed=seed)
    bsopt.optimize(study, _cheap(objective), trials=trials, show_progress_bar=False)
    return study


def _interrupt_at(call: int, objective: object) -> object:
    calls = {"n": 0}

    def interrupted(trial: optuna.Trial) -> float:
        calls["n"] += 1
        if calls["n"] == call:
            trial.suggest_float("lr", 1e-4, 1e-1, log=True)  # mid-trial: params are drawn
            raise KeyboardInterrupt
        return objective(trial)  # type: ignore[return-value]

    return interrupted


def test_seeded_resume_continues_the_search_instead_of_replaying_it(
    sqlite_url: str, tiny_objective: bsopt.Objective
) -> None:
    cheap = _cheap(tiny_objective)
    # Uninterrupted: 8 distinct configurations.
    straight = _seeded_run(sqlite_url, "straight", tiny_objective, seed=3, trials=8)
    assert len(set(_configurations(straight))) == len(_configurations(straight)) == 8
    # Stopped after 3 trials (each stop a new process: a new create_study), resumed to 8.
    for stop in (4, 3):
        study = bsopt.create_study("resumed", storage=sqlite_url, seed=3)
        with pytest.raises(KeyboardInterrupt):
            bsopt.optimize(study, _interrupt_at(stop, cheap), trials=8, show_progress_bar=False)  # type: ignore[arg-type]
    resumed = _seeded_run(sqlite_url, "resumed", tiny_objective, seed=3, trials=8)
    configurations = _configurations(resumed)
    assert len(configurations) == 8 and len(set(configurations)) == 8


def test_a_fresh_seeded_study_is_reproducible(
    sqlite_url: str, tiny_objective: bsopt.Objective
) -> None:
    runs = []
    for name in ("a", "b"):
        study = _seeded_run(sqlite_url, name, tiny_objective, seed=5, trials=3)
        runs.append(_configurations(study))
    assert runs[0] == runs[1]


def test_trial_sampler_seeds_differ_by_study_seed_and_trial_number() -> None:
    from bsopt.search._samplers import per_trial_seed

    seeds = {per_trial_seed(seed, n) for seed in (0, 7) for n in range(50)}
    assert len(seeds) == 100 and per_trial_seed(7, 3) == per_trial_seed(7, 3)


def test_interrupted_trial_is_marked_and_runs_again_first(
    sqlite_url: str, tiny_objective: bsopt.Objective, caplog: pytest.LogCaptureFixture
) -> None:
    cheap = _cheap(tiny_objective)
    study = bsopt.create_study("ctrl-c", storage=sqlite_url, seed=1)
    optuna.logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(KeyboardInterrupt):
            bsopt.optimize(study, _interrupt_at(2, cheap), trials=4, show_progress_bar=False)  # type: ignore[arg-type]
    finally:
        optuna.logging.disable_propagation()
    assert "KeyboardInterrupt" not in caplog.text  # Optuna's stack trace is not shown
    interrupted = study.trials[1]
    assert interrupted.state == TrialState.FAIL
    assert interrupted.user_attrs["stop_reason"] == "interrupted"
    retry = study.trials[2]
    assert retry.state == TrialState.WAITING
    assert retry.system_attrs["failed_trial"] == 1
    assert retry.params["lr"] == interrupted.params["lr"]
    bsopt.optimize(bsopt.create_study("ctrl-c", storage=sqlite_url, seed=1), cheap,  # type: ignore[arg-type]
                   trials=4, show_progress_bar=False)  # fmt: skip
    trials = optuna.load_study(study_name="ctrl-c", storage=sqlite_url).trials
    assert trials[2].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert trials[2].params["lr"] == interrupted.params["lr"]
    assert Counter(t.state.name for t in trials)["FAIL"] == 1
    assert sum(t.state.is_finished() for t in trials) == 5  # 4 finished + the interrupted


def test_rerunning_a_finished_study_changes_nothing(
    sqlite_url: str, tiny_objective: bsopt.Objective
) -> None:
    cheap = _cheap(tiny_objective)
    _seeded_run(sqlite_url, "done", tiny_objective, seed=2, trials=3)
    before = optuna.load_study(study_name="done", storage=sqlite_url)
    again = bsopt.create_study("done", storage=sqlite_url, seed=2)
    assert bsopt.optimize(again, cheap, trials=3, show_progress_bar=False) == 0
    after = optuna.load_study(study_name="done", storage=sqlite_url)
    assert after.trials == before.trials and after.user_attrs == before.user_attrs


# --- the search space is kept with the study ---------------------------------------------


def test_resume_with_another_search_space_is_refused_with_the_difference(
    sqlite_url: str, tiny_data: bsopt.TensorData, tiny_objective: bsopt.Objective
) -> None:
    study = bsopt.create_study("space", storage=sqlite_url)
    bsopt.optimize(study, tiny_objective, trials=1, show_progress_bar=False)
    assert study.user_attrs["search_space"]["batch_size"] == [8, 64]
    wider = bsopt.make_objective(
        bsopt.mlp_builder(tiny_data, hidden=(16,)),
        tiny_data,
        space=bsopt.SearchSpace(batch_size=(128, 256), batch_grid="int"),
        budget=bsopt.Budget(2, evals=4),
        device="cpu",
    )
    with pytest.raises(
        ValueError, match=r"study 'space' was created with another search space or budget"
    ) as refused:
        bsopt.optimize(study, wider, trials=2, show_progress_bar=False)
    lines = str(refused.value).splitlines()
    assert lines[1:3] == ["  batch_grid 'pow2' -> 'int'", "  batch_size [8, 64] -> [128, 256]"]
    assert "--allow-definition-change (allow_space_change=True in Python)" in lines[-1]
    assert len(study.trials) == 1  # nothing ran
    bsopt.optimize(study, wider, trials=2, show_progress_bar=False, allow_space_change=True)
    assert study.user_attrs["search_space"]["batch_size"] == [128, 256]
    assert len(study.trials) == 2


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed")
def test_trials_bsopt_did_not_make_are_refused_unless_adopted(
    sqlite_url: str, tiny_objective: bsopt.Objective
) -> None:
    study = bsopt.create_study("plain", storage=sqlite_url)
    for value in (0.5, 0.6):
        study.tell(study.ask(X), value)  # plain Optuna: no stored definition, no stop_reason
    with pytest.raises(
        ValueError,
        match=r"study 'plain' holds 2 finished trials that bsopt did not make.*count toward "
        r"--trials.*Use a new --study name, or pass --allow-definition-change "
        r"\(allow_space_change=True in Python\)",
    ):
        bsopt.optimize(study, tiny_objective, trials=3, show_progress_bar=False)
    assert len(study.trials) == 2 and "search_space" not in study.user_attrs
    ran = bsopt.optimize(
        study, tiny_objective, trials=3, show_progress_bar=False, allow_space_change=True
    )
    assert ran == 1 and study.user_attrs["definition"]["data"]["train_rows"] == 320


def test_a_fresh_study_with_queued_trials_is_not_refused(
    sqlite_url: str, tiny_objective: bsopt.Objective
) -> None:
    study = bsopt.create_study("queued", storage=sqlite_url)
    study.enqueue_trial({"lr": 0.01})  # queued trials are bsopt's to train, not foreign
    assert bsopt.optimize(study, tiny_objective, trials=1, show_progress_bar=False) == 1
    assert study.trials[0].params["lr"] == 0.01


def test_a_plain_optimize_keeps_the_stored_study_name(
    sqlite_url: str, tiny_objective: bsopt.Objective
) -> None:
    from bsopt.runs._study import check_definition

    study = bsopt.create_study("named", storage=sqlite_url)
    check_definition(study, tiny_objective, name="tiny.py")
    bsopt.optimize(study, tiny_objective, trials=1, show_progress_bar=False)  # no name here
    assert study.user_attrs["definition"]["study"] == "tiny.py"
    with pytest.raises(ValueError, match=r"another definition") as refused:
        check_definition(study, tiny_objective, name="other.py")
    assert "  study definition: tiny.py -> other.py" in str(refused.value).splitlines()


# --- names ----------------------------------------------------------------------------------


def test_study_names_longer_than_the_storages_hold_are_refused(sqlite_url: str) -> None:
    with pytest.raises(ValueError, match=r"study name has 513 characters, more than the 512"):
        bsopt.create_study("x" * 513, storage=sqlite_url)
    assert bsopt.create_study("x" * 512, storage=sqlite_url).study_name == "x" * 512
    with pytest.raises(ValueError, match=r"study name must be a non-empty string, but got ''"):
        bsopt.create_study("", storage=sqlite_url)


# --- trials left RUNNING by a dead worker ---------------------------------------------------

X = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}


def _with_heartbeat(url: str, name: str) -> optuna.Study:
    storage = bsopt.open_storage(url, heartbeat_interval=1, grace_period=60)
    return optuna.load_study(study_name=name, storage=storage)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed")
def test_at_the_total_a_trial_without_heartbeat_is_failed(sqlite_url: str) -> None:
    bsopt.create_study("lost", storage=sqlite_url)
    study = _with_heartbeat(sqlite_url, "lost")
    dead = study.ask(X)
    study._storage.record_heartbeat(dead._trial_id)  # one beat, then its worker "dies"
    study.tell(study.ask(X), 0.5)
    assert close_lost_trials(study, slack=0.2, echo=None) == [dead.number]
    frozen = study.trials[dead.number]
    assert frozen.state == TrialState.FAIL
    assert frozen.user_attrs["stop_reason"].startswith("lost")


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed")
def test_at_the_total_a_trial_with_fresh_heartbeats_is_left_running(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bsopt.create_study("alive", storage=sqlite_url)
    study = _with_heartbeat(sqlite_url, "alive")
    live = study.ask(X)
    stop = threading.Event()

    def beat() -> None:  # what a live worker's heartbeat thread does
        while not stop.is_set():
            study._storage.record_heartbeat(live._trial_id)
            stop.wait(1.0)

    beating = threading.Thread(target=beat)
    beating.start()
    try:
        assert close_lost_trials(study, slack=0.5) == []
    finally:
        stop.set()
        beating.join()
    assert study.trials[live.number].state == TrialState.RUNNING
    assert "still run in other workers" in capsys.readouterr().err


def test_without_heartbeats_the_running_trials_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = bsopt.create_study("j", storage=f"journal:///{tmp_path / 'j.log'}")
    study.ask(X)
    assert close_lost_trials(study) == []
    assert "trials #0 are still RUNNING" in capsys.readouterr().err


# --- hints ----------------------------------------------------------------------------------


def test_browse_hint_never_puts_a_password_on_the_command_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "postgresql+psycopg://bob:hunter2@db:5432/x"
    hint = browse_hint(url)
    assert "hunter2" not in hint
    assert "export BSOPT_STORAGE='postgresql+psycopg://bob:***@db:5432/x'" in hint
    monkeypatch.setenv("BSOPT_STORAGE", url)
    assert "bsopt dashboard   (it reads the URL from $BSOPT_STORAGE)" in browse_hint(url)
    assert browse_hint("sqlite:///x.db") == "Browse it:  optuna-dashboard sqlite:///x.db"


# --- stop signals: SIGTERM and SIGHUP do what Ctrl-C does -----------------------------------


def _signal_at(call: int, signum: int, objective: object) -> object:
    """An objective that receives ``signum`` mid-trial on its ``call``-th trial."""
    calls = {"n": 0}

    def signalled(trial: optuna.Trial) -> float:
        calls["n"] += 1
        value = objective(trial)  # type: ignore[operator]
        if calls["n"] == call:
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the handler raises before this ends
        return float(value)

    return signalled


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_mid_trial_is_handled_as_ctrl_c(
    signum: int, sqlite_url: str, tiny_objective: bsopt.Objective
) -> None:
    if signal.getsignal(signum) != signal.SIG_DFL:
        pytest.skip(f"{signal.Signals(signum).name} is handled or ignored here (nohup?)")
    study = bsopt.create_study("term", storage=sqlite_url, seed=1)
    signalled = _signal_at(2, signum, _cheap(tiny_objective))
    with pytest.raises(Interrupted) as raised:
        bsopt.optimize(study, signalled, trials=4, show_progress_bar=False)  # type: ignore[arg-type]
    assert raised.value.signum == signum and signal_of(raised.value) == signum
    assert [t.state for t in study.trials] == [
        TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING
    ]  # fmt: skip
    assert study.trials[1].user_attrs["stop_reason"] == "interrupted"
    assert study.trials[2].params == study.trials[1].params  # queued again
    assert signal.getsignal(signum) == signal.SIG_DFL  # the default is back


def test_a_signal_while_optuna_records_a_finished_trial_waits_for_the_record(
    sqlite_url: str, tiny_objective: bsopt.Objective, monkeypatch: pytest.MonkeyPatch
) -> None:
    from optuna.study import _optimize

    tell = _optimize._tell_with_warning

    def signal_then_tell(**kwargs: object) -> object:
        os.kill(os.getpid(), signal.SIGTERM)  # lands inside Optuna's recording
        return tell(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_optimize, "_tell_with_warning", signal_then_tell)
    study = bsopt.create_study("tell", storage=sqlite_url)
    with pytest.raises(Interrupted):
        bsopt.optimize(study, _cheap(tiny_objective), trials=3, show_progress_bar=False)  # type: ignore[arg-type]
    (trial,) = study.trials
    assert trial.state == TrialState.COMPLETE and trial.value is not None  # not lost


def test_stop_signals_keep_the_callers_handlers_and_ignore_a_second_signal() -> None:
    def own(signum: int, frame: object) -> None:
        pass

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    signal.signal(signal.SIGUSR1, own)
    try:
        with stop_signals():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
            with pytest.raises(Interrupted, match="SIGTERM"):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            os.kill(os.getpid(), signal.SIGTERM)  # a second signal: ignored while stopping
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, previous)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)


def test_an_interrupted_trial_leaves_no_optuna_warning(caplog: pytest.LogCaptureFixture) -> None:
    study = optuna.create_study()

    def interrupted(trial: optuna.Trial) -> float:
        trial.suggest_float("x", 0, 1)
        raise Interrupted(signal.SIGTERM)

    optuna.logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING), quiet_interrupts(), pytest.raises(Interrupted):
            study.optimize(interrupted)
    finally:
        optuna.logging.disable_propagation()
    assert caplog.text == ""  # neither the stack nor "Trial 0 failed with value None."


def test_summary_names_the_studys_own_storage(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    study = bsopt.create_study("own-storage", storage=url, direction="maximize")
    text = bsopt.runs.summary(study)
    assert f"Storage: {url}" in text and "storage/bsopt.db" not in text
    in_memory = optuna.create_study()
    assert "Storage: in memory" in bsopt.runs.summary(in_memory)
