"""The command line: one module per command group, each registering its commands on app.py's Typer app, and
main.py, which gathers them. Imports every layer below it; nothing in the package imports it (the clients in
clients/, command-line programs themselves, run through app.py's run_app)."""
