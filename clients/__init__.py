"""Command-line clients; each file also runs as a script: python clients/NAME_client.py."""
