"""Step side of the vertex flavor: read the step's secret variables from Secret Manager, then exec the entrypoint.

`python -m conveyor.step_operators.vertex.bootstrap python -m conveyor.entrypoints.step_operator --job ...`

Standard library only (it runs in the step image before anything else): an access token from the metadata server
(the job's service account; GCE_METADATA_HOST overrides the host, as for google-auth), then
`GET /v1/<version>:access`. The values go into the environment of the process it execs, never into argv.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request

SECRET_ENV = "CONVEYOR_VERTEX_SECRET"
SECRET_ENDPOINT_ENV = "CONVEYOR_VERTEX_SECRET_ENDPOINT"
ATTEMPTS = 5


def _get(url: str, headers: dict[str, str]) -> dict[str, object]:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - our own endpoints
        return json.load(response)


def _retrying(url: str, headers: dict[str, str]) -> dict[str, object]:
    """Transient errors (5xx, 429, connection) are retried; a 403/404 is not going to change."""
    for attempt in range(ATTEMPTS):
        try:
            return _get(url, headers)
        except urllib.error.HTTPError as err:
            if err.code < 500 and err.code != 429 or attempt == ATTEMPTS - 1:
                raise
        except OSError:
            if attempt == ATTEMPTS - 1:
                raise
        time.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


def fetch(version: str, endpoint: str | None) -> dict[str, str]:
    host = os.environ.get("GCE_METADATA_HOST", "metadata.google.internal")
    token = _retrying(f"http://{host}/computeMetadata/v1/instance/service-accounts/default/token",
                      {"Metadata-Flavor": "Google"})["access_token"]
    base = (endpoint or "secretmanager.googleapis.com").rstrip("/")
    if "://" not in base:
        base = f"https://{base}"
    body = _retrying(f"{base}/v1/{version}:access", {"Authorization": f"Bearer {token}"})
    data = base64.b64decode(body["payload"]["data"])  # type: ignore[index]
    values = json.loads(data)
    return {str(k): str(v) for k, v in values.items()}


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m conveyor.step_operators.vertex.bootstrap COMMAND [ARGS...]", file=sys.stderr)
        return 2
    version = os.environ.pop(SECRET_ENV, None)
    endpoint = os.environ.pop(SECRET_ENDPOINT_ENV, None)
    if version:
        try:
            os.environ.update(fetch(version, endpoint))
        except Exception as err:  # noqa: BLE001 - reported in the job's log, the job fails
            print(f"conveyor: cannot read the step's secrets from Secret Manager ({version}): "
                  f"{type(err).__name__}: {err}. Does the job's service account have "
                  "roles/secretmanager.secretAccessor?", file=sys.stderr)
            return 2
    sys.stdout.flush()
    os.execvp(argv[0], argv)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
