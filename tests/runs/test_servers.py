"""Many workers on real PostgreSQL and MariaDB servers.

URLs come from $BSOPT_TEST_POSTGRES_URL and $BSOPT_TEST_MYSQL_URL (defaults: the local
servers). An unreachable server skips its tests, except under CI=true where it fails them.
Every test uses its own study name and deletes its study afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
import multiprocessing
from pathlib import Path
from typing import Any
import uuid

from _servers import MYSQL_URL, POSTGRES_URL, _reachable
import optuna
import pytest
from test_workers import (
    bsopt_process,
    check_lost_trial,
    check_sigint_resume,
    sleepy,
    states,
    tiny_script,  # noqa: F401  (a fixture)
)

import bsopt

pytestmark = pytest.mark.server


@pytest.fixture(params=["postgres", "mariadb"])
def server_url(request: pytest.FixtureRequest) -> str:
    return _reachable(POSTGRES_URL if request.param == "postgres" else MYSQL_URL)


@pytest.fixture
def postgres_url() -> str:
    return _reachable(POSTGRES_URL)


@pytest.fixture
def study_name(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh study name; the study is deleted from every server afterwards."""
    name = f"bsopt-test-{uuid.uuid4().hex[:10]}"
    yield name
    for url in (POSTGRES_URL, MYSQL_URL):
        try:
            optuna.delete_study(study_name=name, storage=bsopt.open_storage(url))
        except (KeyError, bsopt.StorageError):
            pass


def _work_in_process(url: str, name: str, trials: int) -> None:
    study = optuna.load_study(study_name=name, storage=bsopt.open_storage(url))
    bsopt.work(study, sleepy(0.2), trials=trials, poll_interval=0.1)  # type: ignore[arg-type]


def test_eight_processes_on_postgres_finish_exactly_n(postgres_url: str, study_name: str) -> None:
    bsopt.create_study(study_name, storage=postgres_url)
    # fork: these workers run a plain sleeping objective and need no fresh interpreter.
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_work_in_process, args=(postgres_url, study_name, 24))
        for _ in range(8)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=180)
    assert [w.exitcode for w in workers] == [0] * 8
    counts = states(postgres_url, study_name)
    assert counts["COMPLETE"] == 24
    assert set(counts) <= {"COMPLETE", "FAIL"}  # FAIL only for a same-instant surplus


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed")
def test_plain_server_urls_open_with_the_installed_driver(study_name: str) -> None:
    plain = {
        _reachable(POSTGRES_URL): "postgresql://postgres@127.0.0.1:5432/test",
        _reachable(MYSQL_URL): "mysql://root@127.0.0.1:3306/test",
    }
    for url, plain_url in plain.items():
        if "@127.0.0.1:" not in url:  # a custom server: the plain form above is not it
            continue
        study = bsopt.create_study(study_name, storage=plain_url)
        study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), 0.5)
        assert states(url, study_name) == {"COMPLETE": 1}
        optuna.delete_study(study_name=study_name, storage=bsopt.open_storage(url))


def test_sigint_then_rerun_resumes_on_the_server(
    server_url: str,
    study_name: str,
    tiny_script: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One process here (the SQLite test covers Ctrl-C reaching worker processes): this
    # checks that the server is left consistent.
    check_sigint_resume(tiny_script, server_url, study_name, monkeypatch, jobs=1)


def _with_password(url: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    userinfo, host = rest.split("@", 1)
    return f"{scheme}://{userinfo.split(':')[0]}:{password}@{host}"


def test_password_never_appears_in_a_failing_run(
    postgres_url: str,
    study_name: str,
    tiny_script: Path,  # noqa: F811
) -> None:
    # Trust authentication accepts any password, so the run reaches the trials and fails
    # there: in the workers, their error messages, the parent's summary and its error.
    secret = "hunter2-" + uuid.uuid4().hex[:6]
    url = _with_password(postgres_url, secret)
    proc = bsopt_process(
        "run", str(tiny_script), "--jobs", "2", "--trials", "3", "--storage", url,
        "--study", study_name, "--no-progress", sleep=0.1, TINY_FAIL="1",
    )  # fmt: skip
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 2, out
    assert "objective broke on purpose" in out
    assert "2 workers failed" in out
    assert ":***@" in out
    assert secret not in out


def test_password_never_appears_when_the_server_is_unreachable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = "postgresql+psycopg://bob:hunter2secret@127.0.0.1:1/test"
    for command in (["run", "synthetic"], ["worker", "synthetic"], ["studies"], ["proxy"]):
        assert bsopt.cli.main([*command, "--storage", url]) == 2
        captured = capsys.readouterr()
        assert "at 127.0.0.1:1" in captured.err
        assert "hunter2secret" not in captured.out + captured.err


def test_study_names_up_to_512_characters_and_no_longer(server_url: str) -> None:
    name = f"bsopt-test-{uuid.uuid4().hex[:10]}-".ljust(512, "x")
    try:
        assert bsopt.create_study(name, storage=server_url).study_name == name
    finally:
        optuna.delete_study(study_name=name, storage=bsopt.open_storage(server_url))
    with pytest.raises(ValueError, match=r"study name has 513 characters, more than the 512"):
        bsopt.create_study(name + "x", storage=server_url)


def test_an_over_long_name_is_one_line_on_the_command_line(
    server_url: str,
    tiny_script: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bsopt.cli.main(["run", str(tiny_script), "--storage", server_url, "--study", "n" * 600])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "study name has 600 characters" in err and "Traceback" not in err


@pytest.mark.slow
def test_a_killed_worker_leaves_nothing_running_on_the_server(
    server_url: str,
    study_name: str,
    tiny_script: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    check_lost_trial(tiny_script, server_url, study_name, monkeypatch, capsys)


def test_passwords_with_at_signs_or_in_the_query_string_never_appear(
    postgres_url: str, study_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Trust authentication accepts any password, so these URLs really connect.
    at_sign = _with_password(postgres_url, "p@ss@" + uuid.uuid4().hex[:6])
    query = postgres_url + "?password=QuerySecret" + uuid.uuid4().hex[:6]
    for url, secret in ((at_sign, at_sign.split(":")[2].rsplit("@", 1)[0]),
                        (query, query.rsplit("=", 1)[1])):  # fmt: skip
        bsopt.create_study(study_name, storage=url)
        assert bsopt.cli.main(["studies", "--storage", url]) == 0
        out = capsys.readouterr().out
        assert study_name in out and secret not in out
        assert "***" in out
        optuna.delete_study(study_name=study_name, storage=bsopt.open_storage(postgres_url))
    # A one-character password masks itself, not the letters of other words.
    url = _with_password("postgresql+psycopg://postgres@127.0.0.1:1/test", "p")
    assert bsopt.cli.main(["studies", "--storage", url]) == 2
    err = capsys.readouterr().err
    assert "OperationalError" in err and "postgres:***@127.0.0.1:1" in err


def _join_at_once(url: str, name: str, barrier: Any, errors: Any) -> None:
    from bsopt.runs._runner import synthetic

    barrier.wait()
    try:
        bsopt.attach_worker(
            synthetic, study_name=name, trials=1, storage=url, create=True, dry_run=True,
            echo=None,
        )  # fmt: skip
    except Exception as e:  # reported to the parent
        errors.put(f"{type(e).__name__}: {e}")


@pytest.mark.slow
def test_workers_creating_a_study_at_once_all_succeed(server_url: str, study_name: str) -> None:
    context = multiprocessing.get_context("fork")  # no re-import: they start together
    barrier = context.Barrier(6)
    errors = context.Queue()
    workers = [
        context.Process(target=_join_at_once, args=(server_url, study_name, barrier, errors))
        for _ in range(6)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=180)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == [] and [w.exitcode for w in workers] == [0] * 6
    study = optuna.load_study(study_name=study_name, storage=bsopt.open_storage(server_url))
    assert study.user_attrs["search_space"]["batch_size"] == [16, 256]
