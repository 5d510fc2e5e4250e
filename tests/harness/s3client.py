"""S3 clients of a test cluster: boto3 clients, and aws-cli runs with an environment and
config files of their own (never the user's)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REGION = "us-east-1"


def make_client(endpoint: str, access_key: str, secret_key: str, retries: int | None = 1, **config_kwargs):
    """A boto3 S3 client: path-style, SigV4, us-east-1.

    `retries=1` (one attempt) makes a 5xx, a stall or a dropped connection fail the test
    instead of hiding behind a retry; `retries=None` gives botocore's defaults, i.e. what a
    user's unconfigured client does."""
    import boto3
    from botocore.config import Config

    cfg = dict(
        s3={"addressing_style": "path"},
        signature_version="s3v4",
        connect_timeout=10,
        read_timeout=60,
    )
    if retries is not None:
        cfg["retries"] = {"total_max_attempts": retries, "mode": "standard"}
    cfg.update(config_kwargs)
    session = boto3.session.Session(
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=REGION,
    )
    return session.client("s3", endpoint_url=endpoint, config=Config(**cfg))


def aws_cli_argv() -> list[str]:
    exe = shutil.which("aws")
    return [exe] if exe else [sys.executable, "-m", "awscli"]


def aws_config_text(s3_lines: str | None = None) -> str:
    """An AWS config file: us-east-1, path-style; `s3_lines` are added under `s3 =`."""
    text = f"[default]\nregion = {REGION}\ns3 =\n    addressing_style = path\n"
    if s3_lines:
        text += "".join(f"    {line.strip()}\n" for line in s3_lines.strip().splitlines())
    return text


def aws_env(endpoint: str, access_key: str, secret_key: str, config_file: Path, credentials_file: Path) -> dict:
    """Environment for aws-cli / boto3 subprocesses talking to `endpoint`: this process's
    environment without its AWS_* variables, plus the given keys and files."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=access_key,
        AWS_SECRET_ACCESS_KEY=secret_key,
        AWS_DEFAULT_REGION=REGION,
        AWS_REGION=REGION,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=str(config_file),
        AWS_SHARED_CREDENTIALS_FILE=str(credentials_file),
        AWS_ENDPOINT_URL=endpoint,
        AWS_PAGER="",
    )
    if "AWS_CA_BUNDLE" in os.environ:
        env["AWS_CA_BUNDLE"] = os.environ["AWS_CA_BUNDLE"]
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def run_aws(endpoint: str, env: dict, args, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs `aws --endpoint-url <endpoint> ARGS...`; raises with its output when `check` fails."""
    argv = [*aws_cli_argv(), "--endpoint-url", endpoint, *[str(a) for a in args]]
    r = subprocess.run(argv, env=env, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise AssertionError(
            f"aws {' '.join(map(str, args))} exited {r.returncode}\n"
            f"stdout: {r.stdout.decode(errors='replace')[-3000:]}\n"
            f"stderr: {r.stderr.decode(errors='replace')[-3000:]}"
        )
    return r
