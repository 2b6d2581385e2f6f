"""One trial on several processes: gloo on the CPU, 2 ranks, real spawned processes.

Rank 0 is the test process; the other rank is spawned and unpickles the objective, so the
models live in ``_distributed_helpers`` (importable by name) and record what each rank saw.
"""

from __future__ import annotations

from collections.abc import Iterator
import itertools
import json
import math
import os
from pathlib import Path
import subprocess
import sys
import time

import _distributed_helpers as helpers
import optuna
from optuna.trial import TrialState
import pytest
import torch

import bsopt
from bsopt.runs._workers import assign_gpus
from bsopt.search._objective import _GROUPS
from bsopt.training._distributed import DistributedError, Group, RankError, share, start_group

pytestmark = pytest.mark.slow


def _records(folder: Path, rank: int) -> list[dict[str, object]]:
    lines = (folder / f"rank{rank}-params.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _samples(folder: Path, rank: int, build: int) -> int:
    path = folder / f"rank{rank}-samples-{build}.txt"
    return sum(int(n) for n in path.read_text().split()) if path.exists() else 0


def _objective(build: object, **options: object) -> bsopt.Objective:
    data = bsopt.make_synthetic(400, n_features=8, n_classes=3, seed=0)
    defaults: dict[str, object] = {
        "space": bsopt.SearchSpace(batch_size=(16, 64), dropout=0.0, lr_scaling="linear"),
        "budget": bsopt.Budget(2, evals=4),
        "device": "cpu",
        "devices": 2,
    }
    objective = bsopt.make_objective(build, data, **(defaults | options))  # type: ignore[arg-type]
    # The preflight built one model here: the records start with the first trial.
    for log in Path(os.environ.get(helpers.RECORD, "/nonexistent")).glob("rank*-params.jsonl"):
        log.unlink()
    return objective


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[bsopt.Objective, Path]]:
    """One objective on two ranks for the whole module: starting a group costs seconds."""
    folder = tmp_path_factory.mktemp("ranks")
    before = os.environ.get(helpers.RECORD)
    os.environ[helpers.RECORD] = str(folder)  # the spawned rank inherits it
    objective = _objective(helpers.build_recording)
    try:
        yield objective, folder
    finally:
        objective.close()
        if before is None:
            del os.environ[helpers.RECORD]
        else:
            os.environ[helpers.RECORD] = before


def _builds(folder: Path) -> int:
    """How many models rank 0 built so far: the index of the next build's records."""
    log = folder / "rank0-params.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


# -- without processes ----------------------------------------------------------------------


def test_share_gives_every_sample_to_exactly_one_rank() -> None:
    for n in (1, 7, 64, 65):
        for size in (2, 3, 4):
            slices = [share(n, r, size) for r in range(size)]
            assert slices[0][0] == 0 and slices[-1][1] == n
            assert all(a[1] == b[0] for a, b in itertools.pairwise(slices))
            sizes = [stop - start for start, stop in slices]
            assert max(sizes) - min(sizes) <= 1


def test_batch_sizes_that_do_not_divide_are_refused_before_any_trial() -> None:
    with pytest.raises(ValueError, match=r"devices=3 .* not multiples of 3 \(16, 32, 64\)"):
        _objective(helpers.build_recording, devices=3)
    with pytest.raises(ValueError, match=r"not multiples of 2 .* Fix: search powers of two"):
        _objective(helpers.build_recording, space=bsopt.SearchSpace(batch_size=(1, 64)))
    with pytest.raises(ValueError, match="not multiples of 2"):
        _objective(
            helpers.build_recording, space=bsopt.SearchSpace(batch_size=(16, 64), batch_grid="int")
        )
    with pytest.raises(ValueError, match="epochs or samples budget"):
        _objective(helpers.build_recording, budget=bsopt.Budget(2, "seconds"))
    with pytest.raises(ValueError, match="devices must be an integer >= 1"):
        _objective(helpers.build_recording, devices=0)


def test_jobs_times_devices_gpus_each_worker_its_own() -> None:
    eight = [str(i) for i in range(8)]
    assert assign_gpus(2, eight, devices=4) == ["0,1,2,3", "4,5,6,7"]
    assert assign_gpus(3, eight, devices=2) == ["0,1", "2,3", "4,5"]
    assert assign_gpus(2, [], devices=4) == [None, None]  # CPU: every rank on the CPU
    with pytest.raises(ValueError, match=r"--jobs 3 --devices 4 needs 12 GPUs.*Use --jobs 2"):
        assign_gpus(3, eight, devices=4)


def test_an_objective_that_cannot_reach_the_other_ranks_says_how_to_fix_it() -> None:
    objective = _objective(lambda params: bsopt.training.mlp(8, 3, hidden=(16,)))
    study = optuna.create_study(direction="maximize")
    with pytest.raises(ValueError, match=r"must be picklable.*module level"):
        study.optimize(objective, n_trials=1)


def test_a_rank_that_cannot_start_names_its_error() -> None:
    with pytest.raises(DistributedError, match="rank 1 could not start: RuntimeError: no such"):
        start_group(2, _FailingFollower())


class _FailingFollower:
    def prepare(self, rank: int) -> object:
        raise RuntimeError("no such data folder")


# -- the trainer on two ranks -----------------------------------------------------------------


@pytest.fixture(scope="class")
def trainer_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Group, Path]]:
    folder = tmp_path_factory.mktemp("trainer")
    group = start_group(2, helpers.SaveAfterTraining(str(folder)))
    try:
        yield group, folder
    finally:
        group.close()


def _train_on_two(
    trainer_group: tuple[Group, Path],
    tag: str,
    params: dict[str, object],
    *,
    epochs: int,
    evals: int,
    micro: int | None = None,
    noise: bool = False,
) -> tuple[torch.nn.Module, bsopt.training.TrainResult, dict[str, object]]:
    """Train on rank 0 (here) and rank 1 (the follower); rank 1's record comes back."""
    group, folder = trainer_group
    message = {"kind": "trial", "tag": tag, "params": params, "epochs": epochs}
    group.command(message | {"evals": evals, "micro": micro, "noise": noise})
    torch.manual_seed(0)
    model = helpers.Recording(bsopt.training.mlp(8, 3, hidden=(16,)), folder / f"{tag}-rank0.txt")
    result = bsopt.training.train(
        model,
        bsopt.make_synthetic(400, n_features=8, n_classes=3, seed=0),
        bsopt.Params(**params),  # type: ignore[arg-type]
        budget=bsopt.Budget(epochs, evals=evals),
        seed=7,
        device="cpu",
        micro_batch_size=micro,
        measure_noise_scale=noise,
        world=group.world,
    )
    deadline = time.monotonic() + 60
    while not (folder / f"{tag}-rank1.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # the file is complete once written; give the writer a moment
    other = torch.load(folder / f"{tag}-rank1.pt", weights_only=True)
    return model, result, other


class TestTrainerOnTwoRanks:
    """``train(world=...)`` itself, rank 0 here and rank 1 spawned; one group for the class
    (a process holds one group at a time, and the objective tests start their own)."""

    def test_two_ranks_make_the_single_process_updates(
        self, trainer_group: tuple[Group, Path]
    ) -> None:
        """Same seed, same global batches: the weights after training equal a single process's
        (so each update's gradient matched), on both ranks, and the ranks trained on disjoint
        halves that add up to samples_seen."""
        data = bsopt.make_synthetic(400, n_features=8, n_classes=3, seed=0)
        # Per device 32 samples in micro-batches of 12: uneven accumulation on every rank, and
        # batches cut at the evaluation point share unevenly too.
        params = {"batch_size": 64, "lr": 0.05, "optimizer": "sgd"}
        torch.manual_seed(0)
        alone = bsopt.training.mlp(8, 3, hidden=(16,))
        single = bsopt.training.train(
            alone,
            data,
            bsopt.Params(**params),
            budget=bsopt.Budget(1, evals=2),
            seed=7,
            device="cpu",
        )
        model, result, other = _train_on_two(
            trainer_group, "sgd", params, epochs=1, evals=2, micro=12
        )

        for name, value in alone.state_dict().items():
            torch.testing.assert_close(model.inner.state_dict()[name], value, rtol=1e-5, atol=1e-6)
            assert torch.equal(other["state"][f"inner.{name}"], model.inner.state_dict()[name])
        assert result.samples_seen == single.samples_seen == other["samples_seen"] == 320
        assert result.optimizer_steps == single.optimizer_steps
        assert result.history[-1][0] == single.history[-1][0]
        assert math.isclose(result.value, single.value, abs_tol=1e-9)
        folder = trainer_group[1]
        trained = [
            sum(int(n) for n in (folder / f"sgd-rank{r}.txt").read_text().split()) for r in (0, 1)
        ]
        assert sum(trained) == 320 and abs(trained[0] - trained[1]) <= result.optimizer_steps
        assert (result.world_size, result.micro_batch_size, result.accumulation_steps) == (
            2,
            12,
            3,
        )

    def test_an_adaptive_batch_is_the_same_on_every_rank(
        self, trainer_group: tuple[Group, Path]
    ) -> None:
        """The noise scale sets the batch size of the next interval: every rank must compute the
        same estimate, or the ranks would train different batches and wait on each other."""
        params = {"batch_size": 64, "lr": 0.01, "batch_schedule": "adaptive", "batch_min": 8}
        _, result, other = _train_on_two(trainer_group, "adaptive", params, epochs=4, evals=8)
        # The same numbers bit for bit (NaN where an interval had no estimate yet).
        assert list(map(repr, result.noise_history)) == list(map(repr, other["noise_history"]))
        assert result.batch_history == other["batch_history"]
        assert any(math.isfinite(v) for v in result.noise_history)
        assert result.samples_seen == other["samples_seen"] == 4 * 320


# -- the objective: rank 0 owns the trial --------------------------------------------------------


def test_params_are_identical_on_both_ranks_and_the_lr_follows_the_global_batch(
    shared: tuple[bsopt.Objective, Path],
) -> None:
    objective, folder = shared
    first = _builds(folder)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(3))
    study.optimize(objective, n_trials=3)
    zero, one = _records(folder, 0)[first:], _records(folder, 1)[first:]
    assert len(zero) == len(one) == 3
    assert zero == one  # every field, the float lr bit for bit (JSON keeps repr)
    for trial, params in zip(study.trials, zero, strict=True):
        attrs = trial.user_attrs
        batch = 2 ** trial.params["log2_batch_size"]
        assert params["batch_size"] == batch == attrs["effective_batch_size"]
        # Linear coupling on the *global* batch, reference 32 (the middle of 16..64).
        assert attrs["lr"] == pytest.approx(trial.params["base_lr"] * batch / 32, rel=1e-12)
        assert params["lr"] == attrs["lr"]
        assert attrs["world_size"] == 2
        assert attrs["per_device_micro_batch_size"] == batch // 2
        assert attrs["accumulation_steps"] == 1


def test_samples_seen_counts_what_both_ranks_trained(shared: tuple[bsopt.Objective, Path]) -> None:
    objective, folder = shared
    first = _builds(folder)
    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=2)
    for k, trial in enumerate(study.trials, start=first):
        both = _samples(folder, 0, k) + _samples(folder, 1, k)
        assert trial.user_attrs["samples_seen"] == both == 640  # 2 epochs of 320
        # Each global batch is halved, the halves differing by at most one sample.
        difference = abs(_samples(folder, 0, k) - _samples(folder, 1, k))
        assert difference <= trial.user_attrs["optimizer_steps"]


def test_a_pruned_trial_releases_both_ranks_at_the_evaluation(
    shared: tuple[bsopt.Objective, Path],
) -> None:
    # Prunes at the first report (accuracy can never reach 2): both ranks must stop right
    # there, and be free for the next trial.
    objective, folder = shared
    first = _builds(folder)
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0)
    )
    study.optimize(objective, n_trials=2)
    first_point = 160  # 640 samples over 4 evaluations
    for k, trial in enumerate(study.trials, start=first):
        assert trial.state == TrialState.PRUNED
        assert trial.user_attrs["samples_seen"] == first_point
        assert _samples(folder, 0, k) + _samples(folder, 1, k) == first_point


def test_an_out_of_memory_on_one_rank_halves_the_micro_batch_on_every_rank(
    shared: tuple[bsopt.Objective, Path],
) -> None:
    objective, folder = shared
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"log2_batch_size": 6, "base_lr": 0.01})
    (folder / helpers.OOM).touch()
    try:
        study.optimize(objective, n_trials=1)
    finally:
        (folder / helpers.OOM).unlink()
    attrs = study.trials[0].user_attrs
    assert study.trials[0].state == TrialState.COMPLETE
    # 32 per device fails on rank 1, 16 fits: one retry, two micro-batches per device.
    assert attrs["oom_retries"] == 1
    assert attrs["per_device_micro_batch_size"] == 16
    assert attrs["accumulation_steps"] == 2
    assert attrs["samples_seen"] == 640


def test_an_error_on_another_rank_reaches_rank_0_and_frees_the_group(
    shared: tuple[bsopt.Objective, Path],
) -> None:
    objective, folder = shared
    study = optuna.create_study(direction="maximize")
    (folder / helpers.ERROR).touch()
    try:
        with pytest.raises(RankError, match="rank 1: ValueError: shape mismatch on rank 1"):
            study.optimize(objective, n_trials=1)
    finally:
        (folder / helpers.ERROR).unlink()
    assert study.trials[0].state == TrialState.FAIL
    # Every rank stopped at the same step: the same group trains the next trial.
    group = _GROUPS[objective]
    study.optimize(objective, n_trials=1)
    assert _GROUPS[objective] is group and study.trials[1].state == TrialState.COMPLETE


def test_a_killed_rank_fails_its_trial_which_is_retried_and_the_study_goes_on(
    shared: tuple[bsopt.Objective, Path], sqlite_url: str
) -> None:
    objective, folder = shared
    study = bsopt.create_study("killed", storage=sqlite_url, direction="maximize")
    study.optimize(objective, n_trials=1)
    before = _GROUPS[objective]
    (folder / helpers.KILL).touch()
    study.optimize(objective, n_trials=3)
    assert not (folder / helpers.KILL).exists()  # rank 1 really died
    states = [t.state for t in study.trials]
    assert states == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.COMPLETE,
    ]
    failed, retry = study.trials[1], study.trials[2]
    assert failed.user_attrs["stop_reason"] == "rank failed"
    assert "another rank died or hung" in failed.user_attrs["stop_detail"]
    # Recovered like a dead worker's trial: queued again with the same parameters.
    assert retry.system_attrs["failed_trial"] == 1 and retry.params == failed.params
    assert not before.healthy() and _GROUPS[objective].healthy()  # a fresh group


def test_a_hung_rank_fails_its_trial_after_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(helpers.RECORD, str(tmp_path))
    monkeypatch.setenv("BSOPT_DIST_TIMEOUT", "10")  # a loaded 2-core CI machine needs slack
    objective = _objective(helpers.build_recording)
    try:
        study = optuna.create_study(direction="maximize")
        study.optimize(objective, n_trials=1)
        hung = _GROUPS[objective]
        (tmp_path / helpers.HANG).touch()
        study.optimize(objective, n_trials=2)
    finally:
        objective.close()
    assert [t.state for t in study.trials] == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.COMPLETE,
    ]
    assert study.trials[1].user_attrs["stop_reason"] == "rank failed"
    assert not hung.processes[0].is_alive()  # the hung rank was stopped, not left behind


RANK_ZERO = """
import os, sys, optuna, torch, bsopt
sys.path.insert(0, {tests!r})
import _distributed_helpers as helpers
from bsopt.search._objective import _GROUPS
from bsopt.runs._workers import assign_gpus

torch.set_num_threads(1)
data = bsopt.make_synthetic(400, n_features=8, n_classes=3, seed=0)
objective = bsopt.make_objective(
    helpers.build_recording, data, space=bsopt.SearchSpace(batch_size=(16, 64)),
    budget=bsopt.Budget(2000, evals=4), device="cpu", devices=2,
)

class Announce:
    def __call__(self, trial):
        print(_GROUPS[objective].processes[0].pid, flush=True)
        return objective(trial)

if __name__ == "__main__":  # the other rank is spawned: it imports this script again
    objective._group()
    study = optuna.create_study(direction="maximize")
    study.optimize(Announce(), n_trials=1)
"""


def test_a_killed_rank_0_takes_the_other_ranks_down(tmp_path: Path) -> None:
    """SIGKILL of the process that owns the trial: nothing can tell the others, yet they
    must not hang on to their device (the trial itself is recovered by the heartbeat, like
    any dead worker's)."""
    script = tmp_path / "rank0.py"
    script.write_text(RANK_ZERO.format(tests=str(Path(__file__).parent)))
    env = dict(os.environ, **{helpers.RECORD: str(tmp_path)})
    rank0 = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert rank0.stdout is not None
        follower = int(rank0.stdout.readline())
        # Wait until both ranks train (the other rank's records grow), then kill rank 0.
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob("rank1-samples-*.txt")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(tmp_path.glob("rank1-samples-*.txt"))
        rank0.kill()
        rank0.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _alive(follower) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(follower)
    finally:
        rank0.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    status = (
        Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}").exists() else "X"
    )
    return status not in ("Z", "X")


# -- the command line ---------------------------------------------------------------------------


def _bsopt(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("BSOPT_STORAGE", None)
    return subprocess.run(
        [sys.executable, "-m", "bsopt", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )


def test_bsopt_run_digits_on_two_devices(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bsopt.db'}"
    args = "run digits --devices 2 --trials 2 --no-progress --storage".split()
    done = _bsopt(*args, url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="digits", storage=url)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == len(study.trials) == 2
    for trial in finished:
        assert trial.user_attrs["world_size"] == 2
        batch = 2 ** trial.params["log2_batch_size"]
        assert trial.user_attrs["per_device_micro_batch_size"] * 2 == batch
        assert trial.user_attrs["samples_seen"] % 1437 == 0 or trial.state == TrialState.PRUNED


TINY_STUDY = """
import bsopt

def build_objective(*, seed):
    data = bsopt.make_synthetic(400, n_features=8, n_classes=3, seed=seed)
    return bsopt.make_objective(
        bsopt.mlp_builder(data, hidden=(16,)), data, space=bsopt.SearchSpace(batch_size=(16, 64)),
        budget=bsopt.Budget(1, evals=2), seed=seed, device="cpu",
    )
"""


def test_two_jobs_of_two_devices_stop_at_the_exact_total(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bsopt.db'}"
    script = tmp_path / "tiny.py"
    script.write_text(TINY_STUDY)
    args = f"run {script} --jobs 2 --devices 2 --trials 4 --no-progress --storage".split()
    done = _bsopt(*args, url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="tiny", storage=url)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4
    assert all(t.user_attrs["world_size"] == 2 for t in finished)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]


def test_devices_that_do_not_divide_the_batch_sizes_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'bsopt.db'}"
    args = ["run", "synthetic", "--devices", "3", "--trials", "1", "--storage", url]
    code = bsopt.cli.main(args)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("bsopt: error: devices=3 splits every global batch") and "Fix:" in err
    assert err.count("\n") == 1 and "Traceback" not in err
