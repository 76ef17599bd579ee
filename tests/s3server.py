"""A local S3-compatible server for tests (moto's ``ThreadedMotoServer``), started by the test that needs it.

``with s3_server() as env:`` starts it on a free port, creates the bucket ``lensearch-test`` and yields the AWS
settings that point a client at it (``AWS_ENDPOINT_URL``, dummy credentials, a region); the settings are also
put into ``os.environ`` for the duration (pyarrow and boto3 read them there) and taken out after.
"""

from __future__ import annotations

import contextlib
import os
from helpers import free_port

BUCKET = "lensearch-test"


@contextlib.contextmanager
def s3_server(bucket: str = BUCKET):
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        import boto3

        boto3.client("s3").create_bucket(Bucket=bucket)
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        from lensearch import storage

        storage._FS.clear()
        server.stop()
