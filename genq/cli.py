"""The ``genq`` command line. Commands parse their arguments and call plain functions; the
heavy imports (torch, transformers) happen inside the commands that need them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from genq.errors import GenqError
from genq.settings import get_settings

app = typer.Typer(help="genq: bulk offline text generation.", no_args_is_help=True)
models_app = typer.Typer(help="Provision and list models.", no_args_is_help=True)
app.add_typer(models_app, name="models")


def _fail(exc: GenqError) -> typer.Exit:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


@app.command()
def run(
    input_path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSONL input")],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL output")],
    model: Annotated[Optional[str], typer.Option(help="model name, directory or HF id")] = None,  # noqa: UP045 - typer needs Optional
    max_batch_size: Annotated[Optional[int], typer.Option(min=1)] = None,  # noqa: UP045
    max_batch_tokens: Annotated[Optional[int], typer.Option(min=1)] = None,  # noqa: UP045
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Generate for every line of INPUT_PATH; resumes when OUTPUT holds an earlier partial run."""
    from worker.bulk import run_file
    from worker.engine import Engine
    from worker.models import load_model

    settings = get_settings()
    name = model or settings.default_model
    try:
        loaded = load_model(name, settings)
        engine = Engine(
            loaded,
            max_batch_tokens=max_batch_tokens or settings.max_batch_tokens,
            max_batch_size=max_batch_size or settings.max_batch_size,
        )
        summary = run_file(input_path, output, engine=engine, model=name, progress=progress)
    except GenqError as exc:
        raise _fail(exc) from None
    typer.echo(summary.text(), err=True)
    typer.echo(f"wrote {summary.lines} lines to {output}", err=True)


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
