"""optuna-dashboard on bsopt's storage, with the verdict as a note and the plots as artifacts.

``bsopt dashboard`` serves the storage every other command uses (``--storage`` >
``$BSOPT_STORAGE`` > ``sqlite:///storage/bsopt.db``) on 127.0.0.1 unless told otherwise, with
Optuna's file-system artifact store in ``storage/artifacts``. ``bsopt report --attach`` (or
:func:`attach_report`) writes the verdict as the study's note and uploads the report's PNG
plots as study artifacts there, so the dashboard shows them beside bsopt's user attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
import ipaddress
import os
from pathlib import Path
import socket
from typing import TYPE_CHECKING, Any
import warnings

import optuna
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact

from bsopt.report._report import Report, write_file
from bsopt.store import mask_url, open_storage, resolve_storage_url

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication

DEFAULT_ARTIFACTS = "storage/artifacts"
ARTIFACTS_ENV = "BSOPT_ARTIFACTS"
_PREFIX = "bsopt-"


def resolve_artifacts_dir(path: str | Path | None = None) -> Path:
    """The artifact folder: ``path`` if given, else ``$BSOPT_ARTIFACTS``, else
    ``storage/artifacts`` (beside the default SQLite storage)."""
    return Path(path or os.environ.get(ARTIFACTS_ENV) or DEFAULT_ARTIFACTS)


def artifact_store(path: str | Path | None = None) -> FileSystemArtifactStore:
    """Optuna's file-system artifact store in :func:`resolve_artifacts_dir` (created if needed).

    Raises:
        ValueError: the folder cannot be created.
    """
    folder = resolve_artifacts_dir(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(
            f"The artifact folder {str(folder)!r} cannot be created ({e.strerror}). "
            f"Choose a writable place with --artifacts or {ARTIFACTS_ENV}."
        ) from None
    return FileSystemArtifactStore(folder)


def attach_report(
    study: optuna.Study, report: Report, *, artifacts: str | Path | None = None
) -> list[str]:
    """Show ``report`` in optuna-dashboard: the verdict as the study's note, the PNG plots
    as study artifacts (named ``bsopt-<plot>.png``).

    Attaching again replaces the note and rewrites the same artifacts in place rather than
    adding copies. The objectives get their names (:func:`name_objectives`), so the
    dashboard says "validation accuracy" rather than "Objective 0". Returns the artifact
    ids, in the order of ``report.plots``.
    """
    from optuna_dashboard import save_note

    store = artifact_store(artifacts)
    name_objectives(study, report.analysis.metric)
    save_note(study, report.note())
    try:
        existing = {m.filename: m.artifact_id for m in get_all_artifact_meta(study)}
    except (TypeError, KeyError):
        # An artifact deleted in the dashboard leaves a null record Optuna cannot list.
        existing = {}
    ids = []
    for name, path in report.plots.items():
        filename = f"{_PREFIX}{name}.png"
        if filename in existing:
            with path.open("rb") as f:
                store.write(existing[filename], f)
            ids.append(existing[filename])
            continue
        # upload_artifact names the artifact after the file; copy under the bsopt name.
        named = write_file(path.with_name(filename), path.read_bytes())
        try:
            ids.append(
                upload_artifact(
                    artifact_store=store,
                    file_path=str(named),
                    study_or_trial=study,
                    mimetype="image/png",
                )
            )
        finally:
            named.unlink()
    return ids


def objective_names(study: optuna.Study, metric: str) -> list[str]:
    """The names of a bsopt study's objectives: ``metric`` (e.g. ``"validation accuracy"``),
    then ``"training seconds"`` for the second objective of ``goal="metric_and_time"``;
    further objectives keep a generic name."""
    names = [metric]
    if len(study.directions) > 1:
        names.append("training seconds")
    names += [f"objective {i}" for i in range(len(names), len(study.directions))]
    return names


def name_objectives(study: optuna.Study, metric: str) -> list[str]:
    """Store the objectives' names with the study (Optuna's ``set_metric_names``, which
    optuna-dashboard shows instead of "Objective 0"), unless the study already names them.
    Returns the names the study holds."""
    existing = study.metric_names
    if existing is not None and len(existing) == len(study.directions):
        return list(existing)
    names = objective_names(study, metric)
    with warnings.catch_warnings():
        # Experimental since Optuna 3.2 and still so marked in 5.0; it is the API the
        # dashboard reads (its own set_objective_names is deprecated in favour of it).
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(names)
    return names


def _check_host_port(host: str, port: int) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer in [0, 65535], but got {port!r}.")
    if not host:
        raise ValueError("host must be a host name or an IP address, e.g. 127.0.0.1.")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    """The ``Host`` header values the dashboard bound to ``host:port`` answers.

    The localhost names and the bound address, each with and without the port. Bound to
    every interface (``0.0.0.0`` or ``::``), also this machine's own names and addresses,
    by which the other machines it was opened to reach it.
    """
    names = {"localhost", "127.0.0.1", "::1", host}
    if host in ("0.0.0.0", "::", ""):
        names |= _own_names()
    allowed = set()
    for name in names:
        bare = name.lower().strip("[]")
        shown = f"[{bare}]" if ":" in bare else bare  # an IPv6 address in a Host header
        allowed |= {shown, f"{shown}:{port}"}
    return frozenset(allowed)


def _own_names() -> set[str]:
    hostname = socket.gethostname()
    names = {hostname, socket.getfqdn()}
    try:
        names |= {str(info[4][0]) for info in socket.getaddrinfo(hostname, None)}
    except OSError:
        pass  # a host name that does not resolve: its name still counts
    return names


class HostGuard:
    """A WSGI application refusing (HTTP 403) requests for a host that is not ``allowed``.

    A browser sends the name it resolved as the ``Host`` header; a page that rebinds its
    own domain to 127.0.0.1 still sends that domain, so it is refused here.
    """

    def __init__(self, app: WSGIApplication, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        host = str(environ.get("HTTP_HOST", "")).lower()
        if host in self.allowed:
            return self.app(environ, start_response)
        body = (
            f"403 Forbidden: the Host header {host!r} is not this dashboard's address. "
            "Open it as http://127.0.0.1:PORT/ or http://localhost:PORT/.\n"
        ).encode()
        start_response(
            "403 Forbidden",
            [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
        )
        return [body]


def serve_dashboard(
    storage: str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    artifacts: str | Path | None = None,
    echo: Callable[[str], None] | None = print,
) -> None:
    """Run optuna-dashboard on bsopt's storage until interrupted (Ctrl+C).

    Args:
        storage: the storage URL (``None``: ``$BSOPT_STORAGE``, then
            ``sqlite:///storage/bsopt.db``), opened as every bsopt command opens it.
        host: the address to bind; ``127.0.0.1`` keeps the dashboard (which can edit notes
            and delete artifacts) private to this machine. ``0.0.0.0`` exposes it.
        port: the TCP port.
        artifacts: the artifact folder (default ``$BSOPT_ARTIFACTS``, else
            ``storage/artifacts``), where ``bsopt report --attach`` puts the plots.

    Requests whose ``Host`` header names neither the bound address nor this machine
    (``localhost``, ``127.0.0.1``, ``[::1]``, with or without the port) are refused with
    HTTP 403 (:class:`HostGuard`), so a web page cannot reach the dashboard through a
    domain name of its own that resolves here (DNS rebinding).

    Raises:
        ValueError: a bad host or port, or the port is taken.
    """
    import bottle
    from optuna_dashboard import wsgi

    _check_host_port(host, port)
    url = resolve_storage_url(storage)
    opened = open_storage(url, heartbeat_interval=None)
    store = artifact_store(artifacts)
    if echo is not None:
        echo(
            f"optuna-dashboard on http://{host}:{port}/ — storage {mask_url(url)}, artifacts "
            f"{resolve_artifacts_dir(artifacts)}. Ctrl+C stops it."
        )
        if not _is_loopback(host):
            echo(f"Warning: bound to {host}; anyone who can reach it can edit this storage.")
    try:
        app = HostGuard(wsgi(opened, artifact_store=store), allowed_hosts(host, port))
        # What optuna_dashboard.run_server does, with the guard around its application.
        bottle.run(app, host=host, port=port)
    except OSError as e:
        raise ValueError(
            f"Cannot serve on {host}:{port} ({e.strerror or e}). The port may be taken: "
            "choose another with --port."
        ) from None
