"""The ``trtrepo`` command: every command group's module, registered on one app."""

from trtrepo.cli import accuracy, build, demo, measure, serve  # noqa: F401  (each registers its commands)
from trtrepo.cli.app import app, run_app


def main() -> None:
    run_app(app)
