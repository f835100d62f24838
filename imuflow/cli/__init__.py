"""The `imuflow` command line.

`import httpx` also imports httpx's own command-line tool (`httpx._main`) whenever click,
rich and pygments are installed, as they are here: ~0.1 CPU s of imports before
`imuflow upload` could send a byte, for a tool this CLI never calls. Marking the module
absent makes httpx fall back to its stub (`httpx.main` raises ImportError if called).
"""

import sys

sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
