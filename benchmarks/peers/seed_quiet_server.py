"""
The seed design (seed_server.py) as an independent harness ports it: no
print per connection, and a listen backlog of 4096.

    WSGI_SSE_LISTEN=tcp:8008:interface=127.0.0.1 twistd -ny seed_quiet_server.py

The blog's code prints a line per connection and disconnection; under twistd
each print is a formatted log line, which costs about as much as the rest of
accepting the connection.  Comparing accept rates with this variant compares
the designs, not their logging.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from seed_server import start  # noqa: E402

application = start(quiet=True, backlog=4096)
