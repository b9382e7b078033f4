"""The command-line options every client shares, declared once so they read and behave the same."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer


class Protocol(str, Enum):
    http = "http"
    grpc = "grpc"


ImagesArgument = Annotated[list[Path], typer.Argument(help="Image files, or folders of images.", show_default=False)]
UrlOption = Annotated[Optional[str], typer.Option(help="Server address HOST:PORT; default localhost:8000 (http) or :8001 (grpc).")]
ApiKeyOption = Annotated[Optional[str], typer.Option(
    envvar="TRTREPO_API_KEY", show_envvar=True,
    help="Key of a server that restricts model configs too (trtrepo's servers do not; a trtrepo server on this "
         "machine is found without it).")]
ProtocolOption = Annotated[Protocol, typer.Option(help="Triton protocol.")]
BatchOption = Annotated[int, typer.Option(min=1, help="Images per request (capped at the model's max_batch_size).")]
WorkersOption = Annotated[int, typer.Option(min=1, help="Requests in flight at once.")]
OutOption = Annotated[Optional[Path], typer.Option(help="Write annotated copies of the images here.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
