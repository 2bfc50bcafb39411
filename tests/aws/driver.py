"""AWS peers for tests/aws.rs: moto's server (the AWS keygate signs for) and boto3 as an
agent runs it, one command per process.

Every command prints one JSON object on stdout: {"ok": <result>} or, for an AWS error the
client library raised (botocore ClientError), {"error": {"code", "message", "status"}};
both exit 0. Anything else is a bug of the test and exits non-zero with a traceback.

The endpoint, region and keys come from the environment the test gives the process
(AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), a JWT
to send as `Proxy-Authorization: Bearer` from KEYGATE_JWT, and the CA to trust for https
from AWS_CA_BUNDLE.

Commands:
  serve-moto          moto's server on 127.0.0.1 (a free port), set up for keygate (below);
                      prints {"port", "base_access_key_id", "base_secret_access_key",
                      "role_arn", "moto"} and serves until stdin closes (the test process
                      exited), then stops.
  whoami              STS GetCallerIdentity
  list-users          IAM ListUsers
  create-user NAME [--tag KEY=VALUE ...]   IAM CreateUser (with tags)
  create-access-key NAME   IAM CreateAccessKey
  delete-access-key NAME KEY_ID   IAM DeleteAccessKey
  s3-roundtrip --bucket B --key K --mode signed|unsigned|chunked --size N
                      CreateBucket (if missing), PutObject of N random bytes, GetObject;
                      prints the SHA-256 of what was sent and of what came back, and the
                      x-amz-content-sha256 / Content-Encoding boto3 sent with PutObject.
  concurrent --n N    N IAM ListUsers at once (threads released together by a barrier).
  list-users-retrying --attempts N
                      IAM ListUsers with botocore's standard retries (N attempts in all):
                      {"ok": {"users", "retry_attempts"}} or {"error": {..., "retry_attempts"}}.
  assume-role ARN     STS AssumeRole as the environment's keys (for the harness's own check):
                      {"access_key_id", "secret_access_key", "session_token"}.
  signed-request [--service S --method M --path P --body B --header K:V ...]
                      a request (default IAM ListUsers) signed by botocore with the
                      environment's keys, not sent: {"method", "url", "headers", "body"}.

moto setup (serve-moto). moto starts with request authentication off, then:
  - IAM user `keygate` with an inline policy allowing sts:AssumeRole, and an access key
    (keygate's base credentials);
  - role `keygate-agents` (account 123456789012) trusting that user for sts:AssumeRole,
    sts:TagSession, sts:SetSourceIdentity, with an inline policy allowing iam:*, s3:* and
    sts:GetCallerIdentity;
  - then POST /moto-api/reset-auth "0": from here on every request must be SigV4-signed by
    a key moto issued (user key, or an AssumeRole session key with its session token),
    and the caller's IAM policies are enforced.
"""

import argparse
import hashlib
import json
import os
import sys
import threading
import urllib.request

import boto3
import botocore
from botocore.config import Config
from botocore.exceptions import ClientError

ACCOUNT = "123456789012"
ROLE_NAME = "keygate-agents"
BASE_USER = "keygate"


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def allow(*actions):
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": list(actions), "Resource": "*"}],
        }
    )


def serve_moto():
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    import moto

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    endpoint = f"http://127.0.0.1:{port}"
    dummy = dict(
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
    )
    iam = boto3.client("iam", **dummy)
    iam.create_user(UserName=BASE_USER)
    iam.put_user_policy(
        UserName=BASE_USER,
        PolicyName="assume-keygate-agents",
        PolicyDocument=allow("sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"),
    )
    key = iam.create_access_key(UserName=BASE_USER)["AccessKey"]
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/{BASE_USER}"},
                "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"],
            }
        ],
    }
    role = iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(
        RoleName=ROLE_NAME,
        PolicyName="agents",
        PolicyDocument=allow("iam:*", "s3:*", "sts:GetCallerIdentity"),
    )
    req = urllib.request.Request(
        endpoint + "/moto-api/reset-auth",
        data=b"0",
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    urllib.request.urlopen(req).read()
    emit(
        {
            "port": port,
            "base_access_key_id": key["AccessKeyId"],
            "base_secret_access_key": key["SecretAccessKey"],
            "role_arn": role["Role"]["Arn"],
            "moto": moto.__version__,
        }
    )
    sys.stdin.read()  # until the test process exits
    server.stop()


# ---------------------------------------------------------------- clients


def config_for(mode=None, **extra):
    """Body modes of S3 PutObject (over https; over http botocore always signs the payload):
    signed   -> x-amz-content-sha256: <hex>       (checksum only when required)
    unsigned -> x-amz-content-sha256: UNSIGNED-PAYLOAD
    chunked  -> STREAMING-UNSIGNED-PAYLOAD-TRAILER, Content-Encoding: aws-chunked,
                trailer x-amz-checksum-crc32 (botocore's default when_supported)"""
    kw = dict(retries={"max_attempts": 1, "mode": "standard"}, **extra)
    if mode == "signed":
        kw["request_checksum_calculation"] = "when_required"
        kw["s3"] = {"payload_signing_enabled": True, "addressing_style": "path"}
    elif mode == "unsigned":
        kw["request_checksum_calculation"] = "when_required"
        kw["s3"] = {"payload_signing_enabled": False, "addressing_style": "path"}
    elif mode == "chunked":
        kw["request_checksum_calculation"] = "when_supported"
        kw["s3"] = {"addressing_style": "path"}
    else:
        kw["s3"] = {"addressing_style": "path"}
    return Config(**kw)


def client(service, mode=None, **extra):
    c = boto3.client(
        service,
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL"),  # unset: AWS's own hosts
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        verify=os.environ.get("AWS_CA_BUNDLE") or None,
        config=config_for(mode, **extra),
    )
    jwt = os.environ.get("KEYGATE_JWT")
    if jwt:

        def add_header(request, **_):
            request.headers["Proxy-Authorization"] = f"Bearer {jwt}"

        c.meta.events.register("before-sign.*.*", add_header)
    task = os.environ.get("KEYGATE_TASK")
    if task:

        def add_task(request, **_):
            request.headers["Keygate-Task"] = task

        c.meta.events.register("before-sign.*.*", add_task)
    return c


def run(fn):
    try:
        emit({"ok": fn()})
    except ClientError as e:
        err = e.response.get("Error", {})
        emit(
            {
                "error": {
                    "code": err.get("Code"),
                    "message": err.get("Message"),
                    "status": e.response.get("ResponseMetadata", {}).get("HTTPStatusCode"),
                }
            }
        )


def s3_roundtrip(a):
    s3 = client("s3", a.mode)
    sent_headers = {}

    def record(request, **_):
        for k, v in request.headers.items():
            sent_headers[k.lower()] = v.decode() if isinstance(v, bytes) else v

    s3.meta.events.register("before-send.s3.PutObject", record)
    try:
        s3.create_bucket(Bucket=a.bucket)
    except ClientError as e:
        if e.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    data = os.urandom(a.size)
    put = {"Bucket": a.bucket, "Key": a.key, "Body": data}
    if a.mode == "chunked":
        put["ChecksumAlgorithm"] = "CRC32"
    s3.put_object(**put)
    got = s3.get_object(Bucket=a.bucket, Key=a.key)["Body"].read()
    return {
        "sent_sha256": hashlib.sha256(data).hexdigest(),
        "got_sha256": hashlib.sha256(got).hexdigest(),
        "sent_len": len(data),
        "got_len": len(got),
        "sent_content_sha256": sent_headers.get("x-amz-content-sha256"),
        "sent_content_encoding": sent_headers.get("content-encoding"),
        "sent_trailer": sent_headers.get("x-amz-trailer"),
    }


def concurrent(n):
    iam = client("iam", max_pool_connections=n)
    barrier = threading.Barrier(n)
    out = [None] * n

    def one(i):
        barrier.wait()
        try:
            iam.list_users()
            out[i] = "ok"
        except ClientError as e:
            out[i] = e.response["Error"]["Code"]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def signed_request(a):
    """A request signed with SigV4 by the environment's keys, not sent. The payload hash
    is x-amz-content-sha256 when --header gives it (e.g. STREAMING-AWS4-HMAC-SHA256-PAYLOAD),
    else the body's SHA-256 (sent as x-amz-content-sha256 for S3 only, as botocore does)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    creds = botocore.session.get_session().get_credentials()
    headers = {}
    for h in a.header:
        k, v = h.split(":", 1)
        headers[k] = v
    if a.service in ("iam", "sts"):
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
    lowered = {k.lower(): v for k, v in headers.items()}
    if a.service == "s3" and "x-amz-content-sha256" not in lowered:
        headers["X-Amz-Content-SHA256"] = hashlib.sha256(a.body.encode()).hexdigest()
    req = AWSRequest(
        method=a.method,
        url=os.environ["AWS_ENDPOINT_URL"].rstrip("/") + a.path,
        data=a.body,
        headers=headers,
    )
    SigV4Auth(creds, a.service, os.environ.get("AWS_DEFAULT_REGION", "us-east-1")).add_auth(req)
    return {
        "method": req.method,
        "url": req.url,
        "headers": {k: v for k, v in req.headers.items()},
        "body": a.body,
    }


def list_users_retrying(attempts):
    c = boto3.client(
        "iam",
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL"),
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        config=Config(retries={"max_attempts": attempts, "mode": "standard"}),
    )
    try:
        r = c.list_users()
        emit({"ok": {
            "users": [u["UserName"] for u in r["Users"]],
            "retry_attempts": r["ResponseMetadata"].get("RetryAttempts"),
        }})
    except ClientError as e:
        err = e.response.get("Error", {})
        meta = e.response.get("ResponseMetadata", {})
        emit({"error": {
            "code": err.get("Code"),
            "message": err.get("Message"),
            "status": meta.get("HTTPStatusCode"),
            "retry_attempts": meta.get("RetryAttempts"),
        }})


def assume_role(role_arn):
    c = client("sts").assume_role(RoleArn=role_arn, RoleSessionName="harness")["Credentials"]
    return {
        "access_key_id": c["AccessKeyId"],
        "secret_access_key": c["SecretAccessKey"],
        "session_token": c["SessionToken"],
    }


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("serve-moto")
    sub.add_parser("whoami")
    sub.add_parser("list-users")
    cu = sub.add_parser("create-user")
    cu.add_argument("name")
    cu.add_argument("--tag", action="append", default=[])
    dk = sub.add_parser("delete-access-key")
    dk.add_argument("name")
    dk.add_argument("key_id")
    sub.add_parser("create-access-key").add_argument("name")
    sub.add_parser("list-access-keys").add_argument("name")
    sub.add_parser("create-access-key-pair").add_argument("name")
    pp = sub.add_parser("put-user-policy")
    pp.add_argument("name")
    pp.add_argument("actions", nargs="+")
    rt = sub.add_parser("s3-roundtrip")
    rt.add_argument("--bucket", required=True)
    rt.add_argument("--key", default="object.bin")
    rt.add_argument("--mode", choices=["signed", "unsigned", "chunked"], required=True)
    rt.add_argument("--size", type=int, default=1 << 20)
    sub.add_parser("concurrent").add_argument("--n", type=int, default=100)
    sr = sub.add_parser("signed-request")
    sr.add_argument("--service", default="iam")
    sr.add_argument("--method", default="POST")
    sr.add_argument("--path", default="/")
    sr.add_argument("--body", default="Action=ListUsers&Version=2010-05-08")
    sr.add_argument("--header", action="append", default=[])
    sub.add_parser("assume-role").add_argument("role_arn")
    sub.add_parser("list-users-retrying").add_argument("--attempts", type=int, default=3)
    a = p.parse_args()
    if a.cmd == "serve-moto":
        serve_moto()
    elif a.cmd == "whoami":
        run(lambda: client("sts").get_caller_identity()["Arn"])
    elif a.cmd == "list-users":
        run(lambda: [u["UserName"] for u in client("iam").list_users()["Users"]])
    elif a.cmd == "create-user":
        tags = [dict(zip(("Key", "Value"), t.split("=", 1))) for t in a.tag]
        extra = {"Tags": tags} if tags else {}
        run(lambda: client("iam").create_user(UserName=a.name, **extra)["User"]["UserName"])
    elif a.cmd == "delete-access-key":
        run(lambda: client("iam").delete_access_key(
            UserName=a.name, AccessKeyId=a.key_id
        )["ResponseMetadata"]["HTTPStatusCode"])
    elif a.cmd == "create-access-key":
        run(lambda: client("iam").create_access_key(UserName=a.name)["AccessKey"]["UserName"])
    elif a.cmd == "list-access-keys":
        run(lambda: {
            k["AccessKeyId"]: k["Status"]
            for k in client("iam").list_access_keys(UserName=a.name)["AccessKeyMetadata"]
        })
    elif a.cmd == "create-access-key-pair":
        run(lambda: {
            k: v
            for k, v in client("iam").create_access_key(UserName=a.name)["AccessKey"].items()
            if k in ("AccessKeyId", "SecretAccessKey", "UserName")
        })
    elif a.cmd == "put-user-policy":
        run(lambda: client("iam").put_user_policy(
            UserName=a.name, PolicyName="granted-by-test", PolicyDocument=allow(*a.actions)
        )["ResponseMetadata"]["HTTPStatusCode"])
    elif a.cmd == "s3-roundtrip":
        run(lambda: s3_roundtrip(a))
    elif a.cmd == "concurrent":
        run(lambda: concurrent(a.n))
    elif a.cmd == "signed-request":
        run(lambda: signed_request(a))
    elif a.cmd == "list-users-retrying":
        list_users_retrying(a.attempts)
    elif a.cmd == "assume-role":
        run(lambda: assume_role(a.role_arn))


if __name__ == "__main__":
    main()
