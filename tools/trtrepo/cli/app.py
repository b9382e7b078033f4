"""The command line's frame: the Typer app every command module registers on, its shared options and parsers,
and how it runs (every error the user can act on one line on stderr and a non-zero exit; SIGTERM and SIGHUP unwind
like Ctrl-C)."""

from __future__ import annotations

import os
import signal
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.exceptions import Abort, TyperException

from trtrepo.engines import ENGINES
from trtrepo.errors import UserError
from trtrepo.perf.progress import console
from trtrepo.perf.tune_space import OBJECTIVES, STRATEGIES


HELP = "trtrepo: the one front door. Export, build, assemble, check, serve and measure a Triton model repository."
app = typer.Typer(add_completion=False, no_args_is_help=True, help=HELP, rich_markup_mode=None)


REPOSITORY = Path("model_repository")


# All work offline; EfficientNet-Lite0's and YOLOv3-tiny's pretrained weights ship with the install: real labels.
DEMO_WEIGHTS = "resnet50=random,efficientnet_lite0=pretrained,yolov3_tiny=pretrained"


DEMO_MODELS = "resnet50,efficientnet_lite0,yolov3_tiny"
#: CTPN's part of the demo (trained weights, one variant and its pipeline), and its two rendered pages' first seed.
DEMO_TEXT_PLAN = Path(__file__).parent.parent / "demo-text.toml"
DEMO_PAGE_SEED = 2


WeightsOption = Annotated[
    Optional[str],
    typer.Option(help="pretrained (ImageNet or COCO), random, or a weights PATH; per model as resnet50=random,yolov3_tiny=pretrained. "
                      "Default: the plan's."),
]


RepoOption = Annotated[Path, typer.Option("--model-repository", "--repo", help="Model repository folder.")]


ApiKeyOption = Annotated[Optional[str], typer.Option(
    envvar="TRTREPO_API_KEY", show_envvar=True,
    help="Key of a server whose restricted APIs (model loading, shared memory, trace, logging) need one; servers that "
         "trtrepo starts on this machine are found without it.")]


VariantsOption = Annotated[Optional[str], typer.Option(help="Comma-separated variants (default: every model in the repository).")]


MpsOption = Annotated[bool, typer.Option(
    "--mps", help="Run the servers this command starts under CUDA's Multi-Process Service (a daemon started for the "
                  "command and told to quit after it; one already running is used), so that a GPU model's instances, "
                  "each a process, run on the GPU at once instead of taking turns. Pays where one request does not "
                  "fill the GPU (H200, CTPN: four instances 2.3x one with MPS, 1.35x without). Needs "
                  "nvidia-cuda-mps-control.")]


# Built from the registry, so that registering an engine is all it takes to offer it here.
Engine = Enum("Engine", {name: name for name in ENGINES}, type=str)


# trtrepo tune's choices.
Strategy = Enum("Strategy", {name: name for name in STRATEGIES}, type=str)
Objective = Enum("Objective", {name: name for name in OBJECTIVES}, type=str)


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"
    int8 = "int8"


class Kind(str, Enum):
    cpu = "cpu"
    gpu = "gpu"
    auto = "auto"


class ServiceKind(str, Enum):
    triton = "triton"
    tfserving = "tfserving"


class ModelControl(str, Enum):
    none = "none"
    poll = "poll"
    explicit = "explicit"


def say(message: str) -> None:
    """A line on stderr as it is (no rich markup: server messages hold brackets)."""
    console.print(message, markup=False, highlight=False)


def int_list(text: str, what: str, least: int = 1) -> list[int]:
    """'1,2,4' -> [1, 2, 4], each at least ``least``; anything else is a one-line error."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"{what} must be comma-separated whole numbers, got {text!r}") from None
    if not values or min(values) < least:
        raise UserError(f"{what} must be whole numbers of at least {least}, got {text!r}")
    return values


def writable_folder(folder: Path) -> None:
    """Make ``folder`` if missing and check a file can be written in it: before a measurement, so that minutes of
    measuring are not lost to an --output the results cannot be written to."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".trtrepo-write-check-"):
            pass
    except OSError as exc:
        raise UserError(f"cannot write results to {folder}: {exc.strerror or exc}; pick another --output") from None


def name_list(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


CalibDirOption = Annotated[
    Optional[Path], typer.Option(
        help="Images for INT8 calibration: a folder (searched recursively) or a file listing paths. Default: the photo "
             "pool's calibration part (`trtrepo photos`), else photos shipped with installed packages.")
]


CalibImagesOption = Annotated[Optional[int], typer.Option(min=1, help="How many calibration images to use (default 64).")]


DeclareOption = Annotated[Optional[Path], typer.Option(
    help="A TOML file of [[model]] tables declaring your own models (an ONNX, TorchScript or torch.export file, a "
         "torchvision architecture or a factory function; README: Your own model), built as the plan's models are.")]
EvalDirOption = Annotated[Optional[Path], typer.Option(
    help="Images the accuracy gate judges reduced-precision variants on against FP32 (a folder or a file list; "
         "calibration images are left out; a detector is judged on those where FP32 finds a box). A verdict rests on "
         "its 95% interval's lower end wherever the images are enough for one. Default: the plan's, else the photo "
         "pool's evaluation part (`trtrepo photos`), else photos shipped with installed packages.")]


AllowBelowGateOption = Annotated[bool, typer.Option(
    help="Publish a variant that scores below its accuracy gate anyway; its config says so and `trtrepo validate` "
         "warns. Without it such a variant is set aside in <repository>.rejected/ with its report.")]


INTERRUPTED = 130  # the exit code of Ctrl-C (128 + SIGINT)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is, like Ctrl-C's KeyboardInterrupt: every ``with server:``
    on the way out stops its server. A second signal raises again, which makes a stop in progress force-kill."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_received: list[int] = []  # the signals Terminated was raised for, since Typer hides the exception (exit code 130)


def _terminate(signum: int, _frame: object) -> None:
    _received.append(signum)
    raise Terminated(signum)


def handle_termination() -> None:
    """SIGTERM (systemd, Docker, Kubernetes) and SIGHUP (a closed terminal) unwind the program like Ctrl-C."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)


def run_app(app: Any, args: list[str] | None = None, prog_name: str | None = None) -> None:
    """Run a Typer app so that every error the user can act on is one line on stderr and a non-zero exit.

    ``args`` and ``prog_name`` default to the process's own (sys.argv), as Click's do."""
    handle_termination()
    try:
        code = app(args=args, prog_name=prog_name, standalone_mode=False)
    except UserError as exc:
        _fail(str(exc), 2)
    except (Abort, KeyboardInterrupt):
        code = INTERRUPTED
    except TyperException as exc:  # bad flags and arguments (Typer's own click)
        _fail(f"{exc.format_message()} (see --help)", exc.exit_code)
    except OSError as exc:
        _fail(f"{exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}", 1)
    except Exception as exc:  # a bug or a library failure: still one line, the traceback on request
        if os.environ.get("TRTREPO_DEBUG"):
            raise
        _fail(f"{exc.__class__.__name__}: {exc} (internal error; TRTREPO_DEBUG=1 shows the traceback)", 1)
    if code == INTERRUPTED:  # Typer returns this for KeyboardInterrupt, and so for Terminated
        if _received:
            _fail(f"stopped by {signal.Signals(_received[0]).name}", 128 + _received[0])
        _fail("interrupted", INTERRUPTED)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> None:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(code)
