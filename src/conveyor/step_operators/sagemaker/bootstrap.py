"""Inside the training container: fetch the step's per-job secret from Secrets Manager, export it, run the step.

`python -m conveyor.step_operators.sagemaker.bootstrap -- <entrypoint...>`. SageMaker shows a job's Environment to
anyone who may describe it, so secret variables travel in a Secrets Manager secret whose ARN is the only thing in
the Environment; the job's execution role reads it here. Light on purpose: botocore only (boto3 and s3fs both
bring it), no pydantic, no Conveyor imports beyond this file.
"""

from __future__ import annotations

import json
import os
import sys

SECRET_ENV = "CONVEYOR_SAGEMAKER_SECRET"
ENDPOINT_ENV = "CONVEYOR_SAGEMAKER_ENDPOINT_URL"


def fetch(secret_id: str, endpoint_url: str | None) -> dict[str, str]:
    """The secret's variables; the region is the one in the secret's ARN (the job runs in it)."""
    import botocore.session

    parts = secret_id.split(":")
    region = parts[3] if secret_id.startswith("arn:") and len(parts) > 3 else None
    client = botocore.session.get_session().create_client("secretsmanager", region_name=region,
                                                          endpoint_url=endpoint_url or None)
    value = client.get_secret_value(SecretId=secret_id)["SecretString"]
    data = json.loads(value)
    if not isinstance(data, dict):
        raise ValueError("the secret's value is not a JSON object of variables")
    return {str(k): str(v) for k, v in data.items()}


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m conveyor.step_operators.sagemaker.bootstrap -- COMMAND...", file=sys.stderr)
        return 2
    secret_id = os.environ.pop(SECRET_ENV, "")
    if secret_id:
        try:
            variables = fetch(secret_id, os.environ.pop(ENDPOINT_ENV, None))
        except Exception as err:  # noqa: BLE001 - the step cannot run without its credentials: say why
            print(f"conveyor: cannot read the step's secret {secret_id} from Secrets Manager "
                  f"({type(err).__name__}: {err}); the job's execution role needs secretsmanager:GetSecretValue "
                  "on it", file=sys.stderr, flush=True)
            return 2
        os.environ.update(variables)
    os.execvp(argv[0], argv)
    return 127  # pragma: no cover - execvp does not return


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
