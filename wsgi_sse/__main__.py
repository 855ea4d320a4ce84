"""``python -m wsgi_sse module:app``: see L{wsgi_sse._cli.main}."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
