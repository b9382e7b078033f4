"""How problems reach the user: one exception type for what they can fix, printed as one line (trtrepo.cli.app)."""


class UserError(Exception):
    """Bad input, missing dependency or unreachable server: reported as one line, exit code 2."""
