"""Container health check: exit 0 when GET /healthz on this container's clconv returns 200.

Reads CLCONV_PORT (default 8000) as the entry point does. Uses only the standard library, so the
image needs no curl.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 4.0


def main() -> int:
    port = os.environ.get("CLCONV_PORT", "8000")
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        print(
            f"unhealthy: GET {url} returned {error.code}: {error.read()[:200]!r}", file=sys.stderr
        )
        return 1
    except (OSError, urllib.error.URLError) as error:
        print(f"unhealthy: GET {url} failed: {error}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"unhealthy: GET {url} returned {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
