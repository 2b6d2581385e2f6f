"""The report renders for a stored study with pruned, failed and running trials mixed in."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import optuna
from optuna.artifacts import get_all_artifact_meta
from optuna.distributions import FloatDistribution, IntDistribution
from optuna_dashboard._note import get_note_from_system_attrs
import pytest

import bsopt
from bsopt.analysis._text import Table, code, line, strong
from bsopt.report._html import html_line, html_table
from bsopt.report._report import (
    PLOTS,
    default_report_folder,
    plot_batch_sizes,
    plot_curves,
    plot_history,
    plot_lr_batch,
    safe_folder_name,
)

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def mixed_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    spec = importlib.util.spec_from_file_location(
        "synthetic_analysis", ROOT / "studies" / "synthetic_analysis.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    url = f"sqlite:///{tmp_path_factory.mktemp('report') / 'mixed.db'}"
    module.build_study(url, "mixed", n_trials=30, noise=0.002)
    return url


def test_report_renders_a_study_with_pruned_failed_and_running_trials(
    mixed_url: str, tmp_path: Path
) -> None:
    report = bsopt.write_report("mixed", tmp_path / "out", storage=mixed_url)
    states = {
        t.state.name for t in optuna.load_study(study_name="mixed", storage=mixed_url).trials
    }
    assert states == {"COMPLETE", "PRUNED", "FAIL", "RUNNING"}
    assert set(report.plots) == set(PLOTS)
    for path in report.plots.values():
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, path
    page = report.html.read_text("utf-8")
    # Self-contained: every plot is inlined, nothing is fetched.
    assert page.count('src="data:image/png;base64,') == len(PLOTS)
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert '<div class="verdict" id="verdict">' in page
    # The search selects 64; without confirm reruns nothing tests it.
    assert "Leading in the search: <strong>64</strong>" in page
    assert "Not yet tested" in page and "<code>bsopt confirm</code>" in page
    assert "<th>PED-ANOVA</th>" in page and "<td>batch_size</td>" in page
    summary = report.markdown.read_text("utf-8")
    assert "## Verdict" in summary and report.analysis.verdict in summary
    for name in PLOTS:
        assert f"({name}.png)" in summary
    assert "1 running or waiting" in report.analysis.verdict


def test_report_of_a_study_without_trials_still_renders(sqlite_url: str, tmp_path: Path) -> None:
    optuna.create_study(storage=sqlite_url, study_name="empty")
    report = bsopt.write_report("empty", tmp_path, storage=sqlite_url)
    assert all(p.is_file() for p in report.plots.values())
    assert "Too few trials to tell" in report.html.read_text("utf-8")


def test_cli_report_attaches_the_note_and_the_plots(
    mixed_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["report", "--storage", mixed_url, "--study", "mixed", "--out", str(tmp_path / "r")]
    args += ["--attach", "--artifacts", str(tmp_path / "artifacts")]
    assert bsopt.cli.main(args) == 0
    out = capsys.readouterr().out
    assert "Leading in the search: 64 (" in out  # no Markdown bold
    assert f"Report: {tmp_path / 'r' / 'report.html'}" in out
    assert f"Attached the verdict as the study note and {len(PLOTS)} plots" in out
    study = optuna.load_study(study_name="mixed", storage=mixed_url)
    system_attrs = study._storage.get_study_system_attrs(study._study_id)
    note = get_note_from_system_attrs(system_attrs, None)
    assert study.metric_names == ["validation accuracy"]  # not "Objective 0" in the dashboard
    assert note["body"].startswith("## bsopt verdict: mixed")
    assert "Leading in the search: **64**" in note["body"]
    metas = get_all_artifact_meta(study)
    assert sorted(m.filename for m in metas) == sorted(f"bsopt-{n}.png" for n in PLOTS)
    assert all(m.mimetype == "image/png" for m in metas)
    stored = tmp_path / "artifacts"
    assert all((stored / m.artifact_id).read_bytes().startswith(PNG_MAGIC) for m in metas)

    # Attaching again rewrites the same artifacts instead of piling up copies.
    assert bsopt.cli.main(args) == 0
    again = get_all_artifact_meta(optuna.load_study(study_name="mixed", storage=mixed_url))
    assert sorted(m.artifact_id for m in again) == sorted(m.artifact_id for m in metas)
    assert len(list(stored.iterdir())) == len(PLOTS)


def test_cli_report_on_an_unknown_study_is_a_user_error(
    mixed_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bsopt.cli.main(["report", "--storage", mixed_url, "--study", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bsopt: error: The storage") and "holds no study named 'nope'" in err
    assert "Traceback" not in err


def test_html_escapes_the_text_and_tags_its_style() -> None:
    text = line(strong("64"), " <script>x</script> ", code("a<b"))
    table = Table((line("a"), line("b")), ((line("1"), line("2")),), ("left", "right"))
    rendered = html_line(text) + html_table(table)
    assert "<strong>64</strong> &lt;script&gt;x&lt;/script&gt; <code>a&lt;b</code>" in rendered
    assert "<th>a</th><th>b</th>" in rendered and "<td>1</td><td>2</td>" in rendered


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../../x", "has a '..' part"),
        ("a/../../x", "has a '..' part"),
        ("/tmp/abs-report", "is an absolute path"),
        ("nul\0name", "holds a NUL character"),
    ],
)
def test_the_default_report_folder_refuses_names_that_leave_it(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as e:
        safe_folder_name(name)
    assert "--out" in str(e.value)


def test_study_names_become_one_safe_folder_name() -> None:
    assert safe_folder_name("digits") == "digits"
    assert safe_folder_name("a/b c:d") == "a_b_c_d"
    assert safe_folder_name("..hidden") == "hidden"
    assert safe_folder_name(".") == "_"
    assert safe_folder_name("étude-1.2") == "étude-1.2"
    assert default_report_folder("x/y") == Path("bsopt-report") / "x_y"


def test_cli_report_cannot_write_outside_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'names.db'}"
    for name in ("../../x", "sub/dir"):
        study = optuna.create_study(storage=url, study_name=name, direction="maximize")
        _fill(study)
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)

    def files() -> list[Path]:
        # Everything but the database and its journal files (-wal, -shm).
        return sorted(
            p.relative_to(tmp_path)
            for p in tmp_path.rglob("*")
            if not p.name.startswith("names.db")
        )

    before = files()
    assert bsopt.cli.main(["report", "--storage", url, "--study", "../../x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bsopt: error: The study name '../../x' has a '..' part")
    assert "Traceback" not in err
    assert files() == before
    # A name with a slash stays inside, as one folder.
    assert bsopt.cli.main(["report", "--storage", url, "--study", "sub/dir"]) == 0
    assert (work / "bsopt-report" / "sub_dir" / "report.html").is_file()
    assert not (work / "bsopt-report" / "sub").exists()


def _fill(study: optuna.Study) -> None:
    dist = {"log2_batch_size": IntDistribution(4, 6), "lr": FloatDistribution(1e-3, 1e-1)}
    for exponent, value in [(4, 0.8), (5, 0.9), (6, 0.85)] * 2:
        study.add_trial(
            optuna.trial.create_trial(
                value=value,
                params={"log2_batch_size": exponent, "lr": 0.01},
                distributions=dist,
            )
        )


def test_plots_speak_plainly(mixed_url: str) -> None:
    study = optuna.load_study(study_name="mixed", storage=mixed_url)
    analysis = bsopt.analyze_batch_sizes(study)
    trials = study.get_trials()
    history = plot_history(trials, analysis).axes[0]
    ticks = [
        t for t in history.get_xticks() if history.get_xlim()[0] <= t <= history.get_xlim()[1]
    ]
    assert ticks and all(float(t).is_integer() for t in ticks)
    # The curves' value axis follows the good trials (finals 0.85-0.95), not 0 to 1.
    curves = plot_curves(trials, analysis).axes[0]
    low, high = curves.get_ylim()
    assert low > 0.6 and high < 1.0
    # n= labels are part of the tick labels, one per batch size, not small print.
    left = plot_batch_sizes(analysis).axes[0]
    labels = [t.get_text() for t in left.get_xticklabels()]
    assert labels[0].startswith("16\nn=") and len(labels) == 5


def test_the_lr_plot_shows_the_critical_batch_size(sqlite_url: str) -> None:
    study = optuna.create_study(storage=sqlite_url, study_name="kink", direction="maximize")
    dist = {"log2_batch_size": IntDistribution(4, 11), "lr": FloatDistribution(1e-4, 1, log=True)}
    for exponent in range(4, 12):
        best = 1e-3 * min(2**exponent, 256)
        for lr, value in ((best, 0.9), (best / 3, 0.8), (best * 3, 0.7)):
            study.add_trial(
                optuna.trial.create_trial(
                    value=value,
                    params={"log2_batch_size": exponent, "lr": lr},
                    distributions=dist,
                )
            )
    analysis = bsopt.analyze_batch_sizes(study)
    assert analysis.lr_fit is not None and analysis.lr_fit.critical_batch_size is not None
    ax = plot_lr_batch(study.get_trials(), analysis).axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert any(label.startswith("critical batch size ≈ 2") for label in labels), labels
    assert any("flat beyond" in label for label in labels)


def test_optunas_own_plots_work_on_a_bsopt_study(mixed_url: str) -> None:
    import optuna.visualization as vis

    assert vis.is_available()  # plotly is a dependency
    study = optuna.load_study(study_name="mixed", storage=mixed_url)
    for plot in (vis.plot_optimization_history, vis.plot_slice, vis.plot_param_importances):
        figure = plot(study)
        assert figure.data, plot.__name__


def test_the_html_verdict_is_rendered_from_the_findings_not_parsed(
    sqlite_url: str, tmp_path: Path
) -> None:
    # Markdown-looking characters in a study name are text: escaped, never turned into tags.
    name = "a `b` *c* <d>"
    _fill(optuna.create_study(storage=sqlite_url, study_name=name, direction="maximize"))
    report = bsopt.write_report(name, tmp_path, storage=sqlite_url)
    page = report.html.read_text("utf-8")
    assert "Study <strong>a `b` *c* &lt;d&gt;</strong> (maximize value)" in page
    assert "<code>bsopt confirm</code>" in page
    assert f"Study **{name}** (maximize value)" in report.analysis.verdict


def test_report_writes_never_follow_a_link_out_of_their_folder(
    mixed_url: str, tmp_path: Path
) -> None:
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    out = tmp_path / "out"
    out.mkdir()
    for name in ("report.md", "report.html", "history.png"):
        (out / name).symlink_to(outside)
    argv = ["report", "--storage", mixed_url, "--study", "mixed", "--out", str(out)]
    assert bsopt.cli.main(argv) == 0
    assert outside.read_text() == "keep me"
    for name in ("report.md", "report.html", "history.png"):
        assert not (out / name).is_symlink() and (out / name).stat().st_size > 100
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["report.md", "report.html", *(f"{name}.png" for name in PLOTS)]
    )
