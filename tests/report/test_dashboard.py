"""`bsopt dashboard` as a real process: its REST API, then the pages in a real Chromium."""

from __future__ import annotations

from collections.abc import Iterator
import http.client
import importlib.util
import json
import os
from pathlib import Path
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

import bsopt

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return bytes(response.read())


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A stored mixed study with the report attached: (storage URL, artifact folder)."""
    spec = importlib.util.spec_from_file_location(
        "synthetic_analysis", ROOT / "studies" / "synthetic_analysis.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    folder = tmp_path_factory.mktemp("dashboard")
    url = f"sqlite:///{folder / 'mixed.db'}"
    study = module.build_study(url, "mixed", n_trials=16)
    report = bsopt.write_report(study, folder / "report")
    bsopt.report.attach_report(study, report, artifacts=folder / "artifacts")
    return url, folder / "artifacts"


@pytest.fixture(scope="module")
def dashboard(stored: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`bsopt dashboard` in its own process on a free port; yields its base URL."""
    url, artifacts = stored
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("BSOPT_STORAGE", None)
    command = [sys.executable, "-m", "bsopt", "dashboard", "--storage", url]
    command += ["--port", str(port), "--artifacts", str(artifacts)]
    # A file, not a pipe: the server logs every request, and a full pipe would block it.
    log_path = tmp_path_factory.mktemp("dashboard-log") / "dashboard.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # imports alone take seconds on a busy 2-core box
        while True:
            try:
                _get(base + "/api/meta")
                break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the dashboard did not come up:\n{log_path.read_text()}")
                time.sleep(0.5)
        assert f"optuna-dashboard on {base}/" in log_path.read_text()
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_rest_api_shows_the_study_its_attributes_note_and_plots(
    dashboard: str, stored: tuple[str, Path]
) -> None:
    studies = json.loads(_get(dashboard + "/api/studies"))["study_summaries"]
    assert [s["study_name"] for s in studies] == ["mixed"]
    study_id = studies[0]["study_id"]
    detail = json.loads(_get(f"{dashboard}/api/studies/{study_id}"))
    states = {t["state"] for t in detail["trials"]}
    assert states == {"Complete", "Pruned", "Fail", "Running"}
    best = detail["best_trials"][0]
    attrs = {a["key"]: a["value"] for a in best["user_attrs"]}
    assert {"effective_batch_size", "samples_per_second", "lr", "stop_reason"} <= set(attrs)
    assert detail["note"]["body"].startswith("## bsopt verdict: mixed")
    # The objective is named, so the dashboard does not say "Objective 0".
    assert detail["objective_names"] == ["validation accuracy"]
    names = sorted(a["filename"] for a in detail["artifacts"])
    assert names == sorted(f"bsopt-{n}.png" for n in bsopt.report._report.PLOTS)
    first = detail["artifacts"][0]
    png = _get(f"{dashboard}/artifacts/{study_id}/{first['artifact_id']}")
    assert png.startswith(b"\x89PNG")


def _chromium_or_skip() -> None:
    if Path(CHROMIUM).exists() and shutil.which(CHROMIUM):
        return
    reason = f"{CHROMIUM} is missing (apt-get install -y chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason + "; CI=true requires the browser tests to run")
    pytest.skip(reason)


@pytest.mark.browser
def test_the_dashboard_in_chromium_shows_the_study_note_and_bsopt_attributes(
    dashboard: str, tmp_path: Path
) -> None:
    _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    studies = json.loads(_get(dashboard + "/api/studies"))["study_summaries"]
    study_id = studies[0]["study_id"]
    detail = json.loads(_get(f"{dashboard}/api/studies/{study_id}"))
    best = detail["best_trials"][0]
    batch = {a["key"]: a["value"] for a in best["user_attrs"]}["effective_batch_size"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{dashboard}/dashboard/studies/{study_id}/note", timeout=60_000)
            page.get_by_text("bsopt verdict: mixed").first.wait_for(timeout=90_000)
            assert page.get_by_text("mixed (id=").first.is_visible()
            body = page.inner_text("body")
            assert f"best batch size for this model: {batch}" in body.lower()
            assert "Best lr scales as batch^" in body
            page.screenshot(path=str(tmp_path / "note.png"))

            page.goto(
                f"{dashboard}/dashboard/studies/{study_id}/trials?numbers={best['number']}",
                timeout=60_000,
            )
            page.get_by_text("User Attributes").first.wait_for(timeout=90_000)
            body = page.inner_text("body")
            assert f"Trial {best['number']} (trial_id=" in body
            assert f"effective_batch_size {batch}" in body
            assert "samples_per_second" in body and "stop_reason completed" in body
            page.screenshot(path=str(tmp_path / "trial.png"), full_page=True)
        finally:
            browser.close()
    for name in ("note.png", "trial.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
    print(f"screenshots: {tmp_path / 'note.png'}, {tmp_path / 'trial.png'}")


def test_a_taken_port_is_a_user_error(stored: tuple[str, Path]) -> None:
    url, artifacts = stored
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ValueError, match=f"Cannot serve on 127.0.0.1:{port}") as e:
            bsopt.report.serve_dashboard(url, port=port, artifacts=artifacts, echo=None)
    assert "choose another with --port" in str(e.value)


def test_cli_dashboard_rejects_a_port_out_of_range(
    stored: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = stored
    assert bsopt.cli.main(["dashboard", "--storage", url, "--port", "70000"]) == 2
    err = capsys.readouterr().err
    assert "port must be an integer in [0, 65535], but got 70000" in err


def test_the_artifact_folder_follows_the_flag_then_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bsopt.report._dashboard import resolve_artifacts_dir

    assert resolve_artifacts_dir() == Path("storage/artifacts")
    monkeypatch.setenv("BSOPT_ARTIFACTS", str(tmp_path / "env"))
    assert resolve_artifacts_dir() == tmp_path / "env"
    assert resolve_artifacts_dir(tmp_path / "flag") == tmp_path / "flag"


def test_objective_names_keep_what_the_study_already_says(sqlite_url: str) -> None:
    import optuna

    from bsopt.report._dashboard import name_objectives

    two = optuna.create_study(
        storage=sqlite_url, study_name="two", directions=["maximize", "minimize"]
    )
    assert name_objectives(two, "validation f1_macro") == [
        "validation f1_macro",
        "training seconds",
    ]
    assert two.metric_names == ["validation f1_macro", "training seconds"]
    named = optuna.create_study(storage=sqlite_url, study_name="named")
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        named.set_metric_names(["my loss"])
    assert name_objectives(named, "validation loss") == ["my loss"]


def _request(base: str, method: str, path: str, host: str) -> tuple[int, bytes]:
    """A real HTTP request to ``base`` with ``host`` as its Host header."""
    connection = http.client.HTTPConnection(urllib.parse.urlsplit(base).netloc, timeout=30)
    try:
        body = json.dumps({"study_name": "planted", "directions": ["minimize"]})
        headers = {"Host": host, "Content-Type": "application/json"}
        connection.request(method, path, body=body if method == "POST" else None, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_requests_for_a_foreign_host_are_refused(dashboard: str, stored: tuple[str, Path]) -> None:
    """DNS rebinding: a page of evil.example resolved to 127.0.0.1 still sends its own Host."""
    import optuna

    url, _ = stored
    port = urllib.parse.urlsplit(dashboard).port
    before = optuna.get_all_study_names(url)
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.evil.example:{port}"):
        status, body = _request(dashboard, "GET", "/api/studies", host)
        assert status == 403, host
        assert b"is not this dashboard's address" in body
        assert _request(dashboard, "POST", "/api/studies", host)[0] == 403
        assert _request(dashboard, "DELETE", "/api/studies/1", host)[0] == 403
    assert optuna.get_all_study_names(url) == before
    for host in ("localhost", f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        status, body = _request(dashboard, "GET", "/api/studies", host)
        assert status == 200, host
        assert [s["study_name"] for s in json.loads(body)["study_summaries"]] == ["mixed"]


def test_allowed_hosts_are_the_bound_address_and_localhost() -> None:
    from bsopt.report._dashboard import allowed_hosts

    assert allowed_hosts("127.0.0.1", 8080) == {
        "localhost", "localhost:8080", "127.0.0.1", "127.0.0.1:8080", "[::1]", "[::1]:8080"
    }  # fmt: skip
    assert {"10.1.2.3", "10.1.2.3:80"} <= allowed_hosts("10.1.2.3", 80)
    assert {"[::1]:9", "[fe80::1]:9"} <= allowed_hosts("fe80::1", 9)
