"""``python -m stableaudio_async``: the same as the ``stableaudio-async`` command."""

import sys

from stableaudio_async.cli import main

sys.exit(main())
