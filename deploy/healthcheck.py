"""Container health check: exit 0 when the server answers GET /health with 200, else 1.

    python deploy/healthcheck.py            # http://127.0.0.1:$SLIMSPEECH_PORT/health (port default 8000)

The image's HEALTHCHECK runs it (no curl in a slim image). /health says the process answers;
/ready (models loaded and warm) is what a load balancer or Kubernetes readiness probe should use.
"""

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("SLIMSPEECH_PORT", "8000")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=4) as r:
            return 0 if r.status == 200 else 1
    except (urllib.error.URLError, OSError, ValueError):
        return 1


if __name__ == "__main__":
    sys.exit(main())
