"""A Cloud Storage of our own for the tests: gcp-storage-emulator on 127.0.0.1, and credentials
that never leave the loopback.

The emulator (PyPI `gcp-storage-emulator`) speaks the JSON API that Beam's GCS filesystem (the
google-cloud-storage client) and gcsfs use; both send their requests to `STORAGE_EMULATOR_HOST`.
Without credentials each process would spend about 20 s asking a metadata server before going
anonymous, so the environment names a made-up service-account key whose token endpoint is a stub
on 127.0.0.1 that hands out a token, and points the metadata server at a closed port. Nothing
reaches beyond the loopback.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

EMULATOR = Path(sys.executable).with_name("gcp-storage-emulator")
BUCKET = "test-bucket"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, never listened to, then released)."""
    return free_port()


class _TokenStub(http.server.BaseHTTPRequestHandler):
    """OAuth's token endpoint: any grant gets a bearer token for an hour."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"access_token": "emulated", "expires_in": 3600, "token_type": "Bearer"})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


def made_up_key(folder: Path, token_uri: str) -> Path:
    """A service-account key file with a fresh RSA key that no Google service knows."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path = folder / "made-up-service-account.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "test-project",
                "private_key_id": "0" * 40,
                "private_key": pem,
                "client_email": "tests@test-project.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": token_uri,
            }
        )
    )
    return path


@dataclass
class Storage:
    """A running emulator: `env` is what a process needs to use it."""

    url: str
    env: dict[str, str]

    def client(self):  # the google-cloud-storage client, for the tests' own checks
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="test-project",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.url},
        )

    def names(self, prefix: str = "") -> list[str]:
        """Every object name under `prefix` in the test bucket."""
        return sorted(blob.name for blob in self.client().list_blobs(BUCKET, prefix=prefix))

    def upload(self, local: Path, name: str) -> str:
        """Copy a local file or folder (recursively) to gs://BUCKET/name; returns its URL."""
        bucket = self.client().bucket(BUCKET)
        if local.is_dir():
            for path in sorted(local.rglob("*")):
                if path.is_file():
                    relative = path.relative_to(local).as_posix()
                    bucket.blob(f"{name}/{relative}").upload_from_filename(str(path))
        else:
            bucket.blob(name).upload_from_filename(str(local))
        return f"gs://{BUCKET}/{name}"


@contextlib.contextmanager
def running_storage(folder: Path) -> Iterator[Storage]:
    """Start the emulator, the token stub and the key; stop both at the end."""
    folder.mkdir(parents=True, exist_ok=True)
    stub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TokenStub)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    token_uri = f"http://127.0.0.1:{stub.server_address[1]}/token"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    metadata = f"127.0.0.1:{closed_port()}"
    env = {
        "STORAGE_EMULATOR_HOST": url,
        "GOOGLE_APPLICATION_CREDENTIALS": str(made_up_key(folder, token_uri)),
        "GOOGLE_CLOUD_PROJECT": "test-project",
        "NO_GCE_CHECK": "true",
        "GCE_METADATA_HOST": metadata,
        "GCE_METADATA_IP": metadata,
        # gcsfs's experimental mode (on by default since 2025) asks Cloud Storage's control
        # plane, over gRPC to storage.googleapis.com and not the emulator, for each bucket's
        # layout before it opens a file, and waits 30 s for each answer that never comes.
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    }
    server = subprocess.Popen(
        [str(EMULATOR), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **env},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("gcp-storage-emulator did not start")
            time.sleep(0.1)
        storage = Storage(url, env)
        storage.client().create_bucket(BUCKET)
        yield storage
    finally:
        server.terminate()
        server.wait(timeout=30)
        stub.shutdown()
        shutil.rmtree(folder, ignore_errors=True)
