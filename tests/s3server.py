"""moto's standalone S3-compatible server for the delivery tests and the chaos soak
(`bench/chaos.py --deliver`): its own process, real HTTP, authentication on."""

from __future__ import annotations

import json
from typing import Any


class S3Server:
    """moto's standalone S3-compatible server in its own process, over real HTTP, with
    authentication on: an IAM user with an access key that may do everything, one bucket."""

    BUCKET = "renders"

    def __init__(self) -> None:
        # moto cannot be told to listen on port 0, so a free port is picked and handed to it;
        # under parallel test workers another process may take that port first (moto then
        # exits, or a connection reaches someone else's server): start again on a new port.
        for attempt in range(5):
            try:
                self._start()
                return
            except Exception:
                self.stop()
                if attempt == 4:
                    raise

    def _start(self) -> None:
        import os
        import socket
        import subprocess
        import sys
        import time

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.url = f"http://127.0.0.1:{self.port}"
        # The first four requests (user, key, policy, bucket) are allowed without credentials.
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4"}
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        self._accounts()

    def _accounts(self) -> None:
        """The user, its key and policy, and the bucket: the four requests moto allows unsigned."""
        import boto3

        anon = {"endpoint_url": self.url, "region_name": "us-east-1", "aws_access_key_id": "setup",
                "aws_secret_access_key": "setup"}
        iam = boto3.client("iam", **anon)
        iam.create_user(UserName="batchgen")
        key = iam.create_access_key(UserName="batchgen")["AccessKey"]
        iam.put_user_policy(UserName="batchgen", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        self.key_id, self.secret = key["AccessKeyId"], key["SecretAccessKey"]
        self.client().create_bucket(Bucket=self.BUCKET)

    def reset(self) -> None:
        """As new: every bucket, object, user and key forgotten (moto's reset API), then a new
        user, key and empty bucket. The tests share one server per worker process and reset it
        for each test instead of paying for a process start (moto's imports: ~2 s of CPU)."""
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(self.url + "/moto-api/reset", method="POST"), timeout=30).read()
        # a raw body (urllib's default form type would make it a form, and moto reads no count)
        urllib.request.urlopen(urllib.request.Request(self.url + "/moto-api/reset-auth", data=b"4", method="POST",
                                                      headers={"Content-Type": "text/plain"}), timeout=30).read()
        self._accounts()

        if self.proc.poll() is not None:  # the port answered, but not as our server
            raise RuntimeError("moto server exited")

    def env(self, **override: str) -> dict[str, str]:
        """What a `batchgen run` process needs in its environment to deliver here."""
        return {"AWS_ACCESS_KEY_ID": self.key_id, "AWS_SECRET_ACCESS_KEY": self.secret, "AWS_REGION": "us-east-1",
                "AWS_ENDPOINT_URL_S3": self.url, **override}

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1", aws_access_key_id=self.key_id,
                            aws_secret_access_key=self.secret)

    def objects(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        """key → {size, sha256 of the body, sha256 metadata}."""
        import hashlib

        c = self.client()
        out: dict[str, dict[str, Any]] = {}
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=self.BUCKET, Prefix=prefix):
            for o in page.get("Contents", []):
                obj = c.get_object(Bucket=self.BUCKET, Key=o["Key"])
                body = obj["Body"].read()
                out[o["Key"]] = {"size": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                                 "meta_sha256": obj["Metadata"].get("sha256")}
        return out

    def stop(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(10)
