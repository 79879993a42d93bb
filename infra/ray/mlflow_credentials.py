"""Write the MLflow client credentials file on the Ray HEAD node only, from AWS SSM Parameter Store.

The sweep driver runs on the head and is the only process that talks to MLflow (trials never
do), so only the head gets credentials: infra/ray/aws-gpu.yaml runs this in
``head_setup_commands`` (workers never run it and their IAM role cannot read the parameter).

    aws ssm put-parameter --name /ganlib/mlflow-client-password --type SecureString --value "$PASSWORD"

writes ``~/.mlflow/credentials`` (mode 600), which the MLflow client reads when
MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD are not set:

    [mlflow]
    mlflow_tracking_username = ganlib-sweeps
    mlflow_tracking_password = ...

Settings (environment): GANLIB_MLFLOW_PASSWORD_PARAMETER (default /ganlib/mlflow-client-password),
GANLIB_MLFLOW_USERNAME (default ganlib-sweeps), AWS_DEFAULT_REGION. With no such parameter
(MLflow without basic auth) it writes nothing and says so.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT_PARAMETER = "/ganlib/mlflow-client-password"
DEFAULT_USERNAME = "ganlib-sweeps"


def credentials_text(username: str, password: str) -> str:
    if any(c in username + password for c in "\r\n"):
        raise ValueError("the MLflow username and password must be single lines")
    return f"[mlflow]\nmlflow_tracking_username = {username}\nmlflow_tracking_password = {password}\n"


def write_credentials(path: Path, username: str, password: str) -> None:
    """Create ``path`` with mode 600 before any secret is written into it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(credentials_text(username, password))


def main(ssm_client=None, home: Path | None = None) -> int:
    parameter = os.environ.get("GANLIB_MLFLOW_PASSWORD_PARAMETER", DEFAULT_PARAMETER)
    username = os.environ.get("GANLIB_MLFLOW_USERNAME", DEFAULT_USERNAME)
    if ssm_client is None:
        import boto3  # in the ganlib images

        ssm_client = boto3.client("ssm")
    try:
        response = ssm_client.get_parameter(Name=parameter, WithDecryption=True)
    except ssm_client.exceptions.ParameterNotFound:
        print(f"no SSM parameter {parameter}: no MLflow credentials written (MLflow without basic auth)")
        return 0
    path = (home or Path.home()) / ".mlflow" / "credentials"
    write_credentials(path, username, response["Parameter"]["Value"])
    print(f"MLflow credentials for {username} written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
