"""``python -m trtrepo.cli``: the same commands as the ``trtrepo`` script."""

from trtrepo.cli.main import main


main()
