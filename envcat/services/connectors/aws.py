"""AWS Secrets Manager through boto3, every call metered by the shared rate limiter.

Reads: ListSecrets pages and BatchGetSecretValue (20 names a call) against the read
bucket; writes (CreateSecret, PutSecretValue) against the write bucket, which stays
below AWS's 50 TPS per account and region. botocore's own retries are off: a throttle
pauses every worker's bucket and is retried here with jittered backoff.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

from envcat.services.connectors.provider import (
    CredentialsRejected,
    ProviderError,
    RemoteValue,
    Throttled,
    Unreachable,
)
from envcat.services.connectors.ratelimit import Bucket, backoff_seconds

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

log = logging.getLogger("envcat.connectors.aws")
# botocore logs whole request and response bodies at DEBUG (secret values, both ways):
# whatever LOG_LEVEL says, its loggers stay at WARNING in every process that imports this.
for _name in ("botocore", "boto3", "s3transfer"):
    logging.getLogger(_name).setLevel(logging.WARNING)
T = TypeVar("T")

THROTTLE_CODES = frozenset(
    {"ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded", "Throttling"}
)
CREDENTIAL_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "ExpiredTokenException",
        "ExpiredToken",
        "AccessDeniedException",
        "AccessDenied",
        "AuthFailure",
        "IncompleteSignature",
    }
)
MAX_THROTTLE_RETRIES = 8
BATCH_GET_MAX = 20
CALL_TIMEOUT_SECONDS = 10


def _code(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    # An XML error body on a JSON service (moto does this): take the code from the text.
    found = re.search(r"<Code>(\w+)</Code>", str(error.get("Message", "")))
    return found.group(1) if code.isdigit() and found else code


class AwsStore:
    """One AWS connection: credentials held in memory only for this sync."""

    def __init__(
        self,
        *,
        region: str,
        access_key_id: str,
        secret_access_key: str,
        endpoint_url: str | None,
        role_arn: str | None,
        reads: Bucket,
        writes: Bucket,
    ) -> None:
        self._reads, self._writes = reads, writes
        self._region, self._endpoint = region, endpoint_url
        config = Config(
            retries={"total_max_attempts": 1, "mode": "standard"},  # no botocore retries
            connect_timeout=CALL_TIMEOUT_SECONDS,
            read_timeout=CALL_TIMEOUT_SECONDS,
        )
        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
        )
        if role_arn:
            session = self._assumed(session, role_arn, config)
        self._client: SecretsManagerClient = session.client(
            "secretsmanager", endpoint_url=endpoint_url, config=config
        )
        self._changed: dict[str, datetime | None] = {}

    def _assumed(self, session: boto3.session.Session, role_arn: str, config: Config) -> Any:
        sts = session.client("sts", endpoint_url=self._endpoint, config=config)
        reply = self._call(
            self._reads,
            1,
            lambda: sts.assume_role(RoleArn=role_arn, RoleSessionName="envcat-connector"),
        )
        creds = reply["Credentials"]
        return boto3.session.Session(
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
            region_name=self._region,
        )

    def _call(self, bucket: Bucket, cost: int, call: Callable[[], T]) -> T:
        """Take tokens, call, and ride out throttling and AWS's own 5xx with jittered backoff.

        A 500/503 (InternalFailure, ServiceUnavailable) is AWS's failure, which its
        documentation says to retry; after MAX_THROTTLE_RETRIES it is Unreachable, which
        the task retries with the same run id.
        """
        failed: str | None = None
        for attempt in range(MAX_THROTTLE_RETRIES):
            bucket.take(cost)
            try:
                return call()
            except ClientError as exc:
                code = _code(exc)
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if code in THROTTLE_CODES or status == 429:
                    delay = backoff_seconds(attempt)
                    bucket.pause(delay)
                    log.warning("aws throttled", extra={"code": code, "delay": round(delay, 2)})
                    time.sleep(delay)
                    failed = None
                    continue
                if isinstance(status, int) and status >= 500:
                    delay = backoff_seconds(attempt)
                    extra = {"code": code, "status": status, "delay": round(delay, 2)}
                    log.warning("aws server error", extra=extra)
                    time.sleep(delay)
                    failed = str(code or status)
                    continue
                if code in CREDENTIAL_CODES or status in (401, 403):
                    raise CredentialsRejected(f"AWS refused the credentials ({code}).") from None
                raise ProviderError(f"AWS answered {code or status}.") from None
            except (ConnectionError, HTTPClientError) as exc:
                raise Unreachable(f"AWS is unreachable ({type(exc).__name__}).") from None
            except BotoCoreError as exc:
                raise ProviderError(f"AWS client error ({type(exc).__name__}).") from None
        if failed is not None:
            raise Unreachable(f"AWS kept failing ({failed}) after {MAX_THROTTLE_RETRIES} attempts.")
        raise Throttled(f"AWS kept throttling after {MAX_THROTTLE_RETRIES} attempts.")

    def check(self) -> None:
        """ListSecrets with one result: proves the credentials and the endpoint."""
        self._call(self._reads, 1, lambda: self._client.list_secrets(MaxResults=1))

    def _list(self, prefix: str) -> list[str]:
        names: list[str] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"MaxResults": 100}
            if prefix:
                kwargs["Filters"] = [{"Key": "name", "Values": [prefix]}]
            if token:
                kwargs["NextToken"] = token
            page = self._call(
                self._reads, 1, functools.partial(self._client.list_secrets, **kwargs)
            )
            for entry in page.get("SecretList", []):
                name = entry.get("Name", "")
                if name.startswith(prefix):  # AWS's name filter matches prefixes of words too
                    names.append(name)
                    self._changed[name] = entry.get("LastChangedDate")
            token = page.get("NextToken")
            if not token:
                return names

    def snapshot(self, prefix: str | None, names: Iterable[str]) -> dict[str, RemoteValue]:
        """Values under `prefix` (if any) plus `names`, 20 per BatchGetSecretValue call."""
        wanted = list(dict.fromkeys([*(self._list(prefix) if prefix is not None else []), *names]))
        out: dict[str, RemoteValue] = {}
        for start in range(0, len(wanted), BATCH_GET_MAX):
            chunk = wanted[start : start + BATCH_GET_MAX]
            reply = self._call(
                self._reads,
                len(chunk),
                functools.partial(self._client.batch_get_secret_value, SecretIdList=chunk),
            )
            for entry in reply.get("SecretValues", []):
                if "SecretString" not in entry:
                    continue  # binary secrets are not environment variables
                name = entry["Name"]
                out[name] = RemoteValue(
                    entry["SecretString"], entry["VersionId"], self._changed.get(name)
                )
                if name not in self._changed:
                    self._changed[name] = entry.get("CreatedDate")
            for error in reply.get("Errors", []):
                code = error.get("ErrorCode", "")
                if code in CREDENTIAL_CODES:
                    raise CredentialsRejected(f"AWS refused the credentials ({code}).")
                if code != "ResourceNotFoundException":
                    raise ProviderError(f"AWS answered {code} for {error.get('SecretId')}.")
        return out

    def write(self, name: str, value: str, *, exists: bool, token: str) -> str:
        """CreateSecret or PutSecretValue with `token` as ClientRequestToken (idempotent)."""
        if not exists:
            try:
                reply = self._call(
                    self._writes,
                    1,
                    lambda: self._client.create_secret(
                        Name=name, SecretString=value, ClientRequestToken=token
                    ),
                )
                return reply["VersionId"]
            except ProviderError as exc:
                if "ResourceExistsException" not in str(exc):
                    raise
        put = self._call(
            self._writes,
            1,
            lambda: self._client.put_secret_value(
                SecretId=name, SecretString=value, ClientRequestToken=token
            ),
        )
        return put["VersionId"]

    def changed_at(self, name: str) -> datetime | None:
        """LastChangedDate from the listing (or the version's CreatedDate)."""
        return self._changed.get(name)
