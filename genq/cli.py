"""The ``genq`` command line. Commands parse their arguments and call plain functions; the
heavy imports (torch, transformers) happen inside the commands that need them."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from genq.errors import GenqError
from genq.fairshare import MAX_PRIORITY, MIN_PRIORITY
from genq.settings import get_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from genq.client import Client

app = typer.Typer(help="genq: bulk offline text generation.", no_args_is_help=True)
models_app = typer.Typer(help="Provision and list models.", no_args_is_help=True)
app.add_typer(models_app, name="models")
db_app = typer.Typer(help="The job database.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"genq {version('genq')}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """genq: bulk offline text generation."""


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _fail(exc: GenqError) -> typer.Exit:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


@contextmanager
def _api() -> Iterator[Client]:
    """A client of GENQ_API_URL; what it raises ends the command with one line and exit 2."""
    from genq.client import Client

    try:
        client = Client(get_settings())
    except GenqError as exc:
        raise _fail(exc) from None
    try:
        yield client
    except GenqError as exc:
        raise _fail(exc) from None
    finally:
        client.close()


def _follow(client: Client, job: dict[str, Any]) -> dict[str, Any]:
    """Poll ``job`` until it ends, with a bar of its requests, its rate and the server's ETA."""
    import time

    now = job

    def shown(_item: object) -> str:
        rate, eta = now["throughput"], now["eta_seconds"]
        left = f"  ETA {eta:.0f}s" if eta is not None else ""
        return (
            f"{rate['requests_per_second']:.1f} req/s  {rate['tokens_per_second']:.0f} tok/s{left}"
        )

    def ended(current: dict[str, Any]) -> int:
        counts = current["counts"]
        return int(counts["succeeded"] + counts["failed"] + counts["cancelled"])

    with typer.progressbar(
        length=job["counts"]["total"],
        label="requests",
        file=sys.stderr,
        show_eta=False,  # the server's, from the job's own rate, is shown instead
        item_show_func=shown,
    ) as bar:
        done = ended(now)
        bar.update(done)
        while now["status"] not in ("completed", "cancelled"):
            time.sleep(1.0)
            now = client.status(now["id"])
            if ended(now) != done and not sys.stderr.isatty():  # a log, where no bar shows
                typer.echo(f"{ended(now)}/{now['counts']['total']}  {shown(None)}", err=True)
            bar.update(ended(now) - done)
            done = ended(now)
    typer.echo(f"{now['status']}: {json.dumps(now['counts'])}", err=True)
    return now


@app.command()
def run(
    input_path: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="JSONL, CSV or Parquet input")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL output")],
    model: Annotated[Optional[str], typer.Option(help="model name, directory or HF id")] = None,  # noqa: UP045 - typer needs Optional
    max_batch_size: Annotated[Optional[int], typer.Option(min=1)] = None,  # noqa: UP045
    max_batch_tokens: Annotated[Optional[int], typer.Option(min=1)] = None,  # noqa: UP045
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Generate for every line of INPUT_PATH; resumes when OUTPUT holds an earlier partial run.

    The model is --model (a name, or a model directory), else the one OpenAI lines name in
    body.model, else the default."""
    from genq.modelnames import check_model, local_model
    from worker.bulk import read_input, run_file
    from worker.service import model_engine

    settings = get_settings()
    if max_batch_size or max_batch_tokens:
        settings = settings.model_copy(
            update={
                "max_batch_size": max_batch_size or settings.max_batch_size,
                "max_batch_tokens": max_batch_tokens or settings.max_batch_tokens,
            }
        )
    if model is not None:
        model, settings = local_model(model, settings)
    # SIGTERM as Ctrl+C: written batches stay, what was claimed and not written goes back to
    # the queue of the job, and running the command again resumes.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        source = read_input(input_path, model=model, settings=settings)
        if not source.read.valid:  # refused before the model loads (a CSV, the wrong file)
            first = source.read.lines[0].error_text if source.read.lines else "the file is empty"
            raise GenqError(
                f"no line of {input_path} can run (JSONL, CSV or Parquet expected): {first}"
            )
        check_model(source.model, settings)  # an unknown name is refused before any load
        engine = model_engine(settings, source.model)()
        summary = run_file(source, output, engine=engine, settings=settings, progress=progress)
    except GenqError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        typer.echo("interrupted: run the same command again to resume", err=True)
        raise typer.Exit(code=130) from None
    typer.echo(summary.text(), err=True)
    typer.echo(f"wrote {summary.lines} lines to {output}", err=True)
    if summary.failed and not summary.ok and not summary.resumed:
        typer.secho(f"error: every line failed: see {output}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)


@models_app.command("pull")
def models_pull(name: Annotated[str, typer.Argument()] = "smollm2-135m") -> None:
    """Provision a built-in model into the model cache (converted once, then reused)."""
    from worker.models import pull_model

    try:
        path = pull_model(name, get_settings())
    except GenqError as exc:
        raise _fail(exc) from None
    typer.echo(f"{name}: ready at {path}")


@models_app.command("list")
def models_list() -> None:
    """Built-in models and whether they are provisioned here."""
    from worker.models import list_models

    for info in list_models(get_settings()):
        state = "ready" if info.ready else "not pulled"
        typer.echo(f"{info.name:<16} {info.kind:<10} {state:<11} {info.path or ''}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema at GENQ_DATABASE_URL to the newest revision."""
    from genq.store import upgrade

    settings = get_settings()
    upgrade(settings.database_url)
    typer.echo("database schema is up to date")


@app.command()
def worker(
    model: Annotated[Optional[str], typer.Option(help="the model this worker serves")] = None,  # noqa: UP045
) -> None:
    """Serve one model's queue: a Celery worker on GENQ_REDIS_URL.

    One message at a time; run one per device. SIGTERM finishes the batch in hand and releases
    the rest of its window."""
    from genq.modelnames import local_model
    from worker.tasks import run_worker  # it sets up logging (GENQ_LOG_FORMAT) itself

    name, settings = local_model(model or get_settings().default_model, get_settings())
    try:
        run_worker(settings, model=name)
    except GenqError as exc:
        raise _fail(exc) from None


@app.command()
def reconcile(
    once: Annotated[bool, typer.Option(help="one pass, then exit")] = False,
) -> None:
    """Announce lost work again and fail requests out of attempts.

    Every GENQ_RECONCILE_SECONDS, or once; each worker also runs this in a thread."""
    import time

    from genq.logs import configure_logging
    from genq.producer import CeleryPublisher
    from genq.reconciler import reconcile_once
    from worker.celery_app import make_celery

    settings = get_settings()
    configure_logging(settings)
    publisher = CeleryPublisher(make_celery(settings))
    sessions = _sessions()
    while True:
        report = reconcile_once(sessions, publisher, settings)
        typer.echo(
            f"failed {len(report.failed)}, cancelled {len(report.cancelled)}, "
            f"announced {sum(len(a.request_ids) for a in report.announcements)} "
            f"({len(report.expired)} expired, {len(report.unannounced)} unannounced)"
        )
        if once:
            return
        time.sleep(settings.reconcile_seconds)


jobs_app = typer.Typer(help="Your jobs on GENQ_API_URL.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")


@jobs_app.command("list")
def jobs_list(
    limit: Annotated[int, typer.Option(min=1, max=100, help="jobs to show, newest first")] = 20,
    after: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="show the jobs older than this job id (the last one of a page)"),
    ] = None,
) -> None:
    """Your tenant's jobs, newest first: id, status, model, progress, failures, created."""
    with _api() as client:
        page = client.jobs(after=after, limit=limit)
    typer.echo(f"{'job':<32} {'status':<10} {'model':<16} {'done':>15} {'failed':>7}  created")
    for job in page["data"]:
        c = job["counts"]
        done = f"{c['succeeded'] + c['failed'] + c['cancelled']}/{c['total']}"
        typer.echo(
            f"{job['id']:<32} {job['status']:<10} {job['model']:<16} {done:>15} "
            f"{c['failed']:>7}  {job['created_at'][:19].replace('T', ' ')}"
        )
    if page["has_more"]:
        typer.echo(f"more: genq jobs list --after {page['last_id']}", err=True)


keys_app = typer.Typer(help="API keys: bearer tokens bound to a tenant.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="the tenant the key acts for")],
    name: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="what the key is for, shown by genq keys list (e.g. ci, alice)"),
    ] = None,
) -> None:
    """Create an API key for TENANT and print it (it is stored hashed: shown this once)."""
    from genq.auth import create_key

    try:
        with _sessions().begin() as session:
            key = create_key(session, tenant=tenant, name=name)
    except GenqError as exc:
        raise _fail(exc) from None
    typer.echo(key)


@keys_app.command("list")
def keys_list(
    tenant: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="only this tenant's keys"),
    ] = None,
    revoked: Annotated[bool, typer.Option("--revoked", help="revoked keys too")] = False,
) -> None:
    """The keys, oldest first: id, tenant, name, first characters, created and last used
    (written by API processes to the minute). Never the key itself."""
    from genq.auth import list_keys

    with _sessions().begin() as session:
        keys = list_keys(session, tenant=tenant, revoked=revoked)
    header = f"{'id':<30} {'tenant':<16} {'name':<16} {'starts':<11} {'created':<17} last used"
    typer.echo(header + ("   revoked" if revoked else ""))
    for k in keys:
        line = (
            f"{k.id:<30} {k.tenant:<16} {k.name or '-':<16} {k.prefix + '…':<11} "
            f"{_when(k.created_at):<17} {_when(k.last_used_at):<17}"
        )
        typer.echo(line + (f" {_when(k.revoked_at)}" if revoked else "").rstrip())


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="the key's id (genq keys list)")],
) -> None:
    """Revoke a key: API processes refuse it within GENQ_KEY_CACHE_SECONDS (default 5)."""
    from genq.auth import revoke_key

    try:
        with _sessions().begin() as session:
            done = revoke_key(session, key_id)
    except GenqError as exc:
        raise _fail(exc) from None
    typer.echo(f"revoked {key_id}" if done else f"{key_id} was revoked already")


def _sessions() -> sessionmaker[Session]:
    from genq.store import make_engine, session_factory

    return session_factory(make_engine(get_settings().database_url))


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M")


tenants_app = typer.Typer(
    help="Tenants' shares and limits (what differs from the GENQ_* defaults).",
    no_args_is_help=True,
)
app.add_typer(tenants_app, name="tenants")


@tenants_app.command("set")
def tenants_set(
    name: Annotated[str, typer.Argument(help="the tenant")],
    weight: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(min=0.001, help="its share of the workers against others (default 1)"),
    ] = None,
    max_queued_requests: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=0, help="most requests accepted and not finished"),
    ] = None,
    max_queued_tokens: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=0, help="most estimated tokens (prompt + max_new_tokens) not finished"),
    ] = None,
    reset: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="a setting back to the default: weight, max-queued-requests, ..."),
    ] = None,
) -> None:
    """Set a tenant's weight or limits; those not given keep their value."""
    from genq.store.shares import set_tenant

    names = {"weight", "max-queued-requests", "max-queued-tokens"}
    unknown = set(reset or ()) - names
    if unknown:
        raise _fail(GenqError(f"--reset takes {', '.join(sorted(names))}, not {sorted(unknown)}"))
    with _sessions().begin() as session:
        set_tenant(
            session,
            name=name,
            weight=weight,
            max_queued_requests=max_queued_requests,
            max_queued_tokens=max_queued_tokens,
            clear=[n.replace("-", "_") for n in reset or ()],
        )
    tenants_list()


@tenants_app.command("webhook")
def tenants_webhook(
    name: Annotated[str, typer.Argument(help="the tenant")],
    url: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="where its jobs' events go when a job names no webhook_url"),
    ] = None,
    clear_url: Annotated[bool, typer.Option(help="no default webhook for its jobs")] = False,
    rotate_secret: Annotated[
        bool, typer.Option(help="a new signing secret (the old one stops verifying)")
    ] = False,
) -> None:
    """Show, or set, a tenant's default webhook URL, and print its signing secret."""
    from sqlalchemy import select, update

    from genq.intake.bodies import check_webhook_url
    from genq.store.tables import Tenant
    from genq.store.webhooks import tenant_secret

    if url is not None:
        try:
            check_webhook_url(url)
        except ValueError as exc:
            raise _fail(GenqError(f"--url {exc}")) from None
    with _sessions().begin() as session:
        secret = tenant_secret(session, tenant=name, rotate=rotate_secret)
        if url is not None or clear_url:
            session.execute(
                update(Tenant)
                .where(Tenant.name == name)
                .values(webhook_url=None if clear_url else url)
            )
        held = session.scalar(select(Tenant.webhook_url).where(Tenant.name == name))
    typer.echo(f"url     {held or '-'}")
    typer.echo(f"secret  {secret}")


@tenants_app.command("list")
def tenants_list() -> None:
    """Each tenant with settings of its own, and its queued and running work now."""
    from genq.store.shares import default_limits, list_tenants, tenant_limits, usage

    settings = get_settings()
    with _sessions().begin() as session:
        used = usage(session)
        names = {t.name for t in list_tenants(session)} | set(used)
        limits = tenant_limits(session, names, defaults=default_limits(settings))
    typer.echo(
        f"{'tenant':<20} {'weight':>7} {'max requests':>13} {'max tokens':>13} "
        f"{'queued':>9} {'running':>8}"
    )
    for name in sorted(names):
        lim, use = limits[name], used.get(name)
        typer.echo(
            f"{name:<20} {lim.weight:>7g} {_limit(lim.max_queued_requests):>13} "
            f"{_limit(lim.max_queued_tokens):>13} {use.queued if use else 0:>9} "
            f"{use.running if use else 0:>8}"
        )


def _limit(value: int | None) -> str:
    return "-" if value is None else str(value)


@app.command()
def compose(
    gpus: Annotated[int, typer.Option(min=1, help="workers, one per GPU (ids 0..N-1)")] = 1,
    gpu_ids: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="comma-separated device ids instead, e.g. 0,2,3"),
    ] = None,
    base: Annotated[
        Path, typer.Option(exists=True, dir_okay=False, help="the compose file to start from")
    ] = Path("docker-compose.yml"),
    output: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--output", "-o", help="write here instead of standard output"),
    ] = None,
) -> None:
    """A compose file with one worker service per GPU, each reserving its own device (what
    `--scale worker=N` cannot promise)."""
    from genq.compose import render

    ids = [g.strip() for g in gpu_ids.split(",")] if gpu_ids else [str(n) for n in range(gpus)]
    try:
        text = render(base, ids)
    except ValueError as exc:
        raise _fail(GenqError(str(exc))) from None
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        typer.echo(f"wrote {output}: {len(ids)} workers", err=True)


@app.command()
def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    tenant: Annotated[str, typer.Option(help="tenant of the key printed at start")] = "default",
) -> None:
    """The embedded service: the HTTP API and an in-process worker on the SQLite database at
    GENQ_DATABASE_URL, no Redis. Prints an API key to use."""
    from api.serve import serve_embedded
    from genq.logs import configure_logging

    settings = get_settings()
    configure_logging(settings)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again for the handler it
    # found: as Ctrl+C, that unwinds through serve_embedded, which stops the in-process worker
    # (the batch in hand is written, the rest of its window goes back to the queue).
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        serve_embedded(settings, host=host, port=port, tenant=tenant)
    except KeyboardInterrupt:
        typer.echo("genq serve stopped", err=True)


@app.command()
def api(
    host: Annotated[str, typer.Option()] = "0.0.0.0",
    port: Annotated[int, typer.Option()] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="API processes")] = 1,
) -> None:
    """The HTTP API alone (distributed mode): jobs go to PostgreSQL and Redis, workers run them."""
    import uvicorn

    from genq.logs import logging_config

    uvicorn.run(
        "api.app:create_distributed_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # Applied in every API process uvicorn starts, its own loggers included.
        log_config=logging_config(get_settings()),
        log_level="info",
    )


@app.command()
def submit(
    input_path: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="JSONL, CSV or Parquet input")
    ],
    model: Annotated[Optional[str], typer.Option(help="model name")] = None,  # noqa: UP045
    wait: Annotated[bool, typer.Option(help="show progress until the job ends")] = False,
    priority: Annotated[
        int,
        typer.Option(
            min=MIN_PRIORITY,
            max=MAX_PRIORITY,
            help="order among your own jobs: higher runs first, lower still moves",
        ),
    ] = 0,
) -> None:
    """Submit INPUT_PATH (native or OpenAI Batch lines) as one job to GENQ_API_URL (key:
    GENQ_API_KEY); prints the job id. Each line keeps its own parameters; a bad line fails
    alone, and the job's results have one line per input line, in order."""
    with _api() as client:
        job = client.submit(input_path, model=model, priority=priority)
        typer.echo(job["id"])
        if wait:
            _follow(client, job)


@app.command()
def status(job_id: str) -> None:
    """Print a job's status, counts, progress and ETA as JSON."""
    with _api() as client:
        typer.echo(json.dumps(client.status(job_id), indent=2))


@app.command()
def results(
    job_id: str, output: Annotated[Path, typer.Option("--output", "-o", help="JSONL output")]
) -> None:
    """Write a job's finished results, in input order, to OUTPUT (``-``: standard output)."""
    to_stdout = str(output) == "-"
    # The file opens once the client is made: a missing key leaves no empty file behind.
    with (
        _api() as client,
        nullcontext(sys.stdout.buffer) if to_stdout else output.open("wb") as out,
    ):
        for chunk in client.results(job_id):
            out.write(chunk)
    if not to_stdout:
        typer.echo(f"wrote {output}", err=True)


@app.command()
def cancel(job_id: str) -> None:
    """Cancel a job: queued requests now, running ones once they finish."""
    with _api() as client:
        typer.echo(client.cancel(job_id)["status"])


@app.command()
def retry(
    job_id: str,
    wait: Annotated[bool, typer.Option(help="show progress until the job ends")] = False,
) -> None:
    """Queue a completed job's failed requests again (fresh attempts; its successes are kept)
    and print how many went back. Lines refused at intake stay failed."""
    with _api() as client:
        job = client.retry(job_id)
        typer.echo(f"{job['requeued']} failed requests of {job_id} queued again")
        if wait and job["requeued"]:
            _follow(client, job)
