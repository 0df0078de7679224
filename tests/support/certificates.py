"""Certificates for the integration tests: a dev CA with ECDSA and RSA certificates
from ``rampart certs dev`` (``make_certs()``), and what a PEM certificate says
(``cert_info()``, through the openssl CLI)."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path
from typing import Iterable

from processes import check, rampart_bin, temp_dir

SITE = "www.foobar.com"  # the site every test configuration serves



@dataclasses.dataclass
class CertSet:
    dir: Path
    names: list[str]

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def ecdsa(self) -> dict:
        return {"cert": str(self.dir / "ecdsa.pem"), "key": str(self.dir / "ecdsa.key")}

    @property
    def rsa(self) -> dict:
        return {"cert": str(self.dir / "rsa.pem"), "key": str(self.dir / "rsa.key")}

    @property
    def certificates(self) -> list[dict]:
        """Config entries: ECDSA first, then RSA."""
        return [self.ecdsa, self.rsa]


CERT_FILES = ("ca.pem", "ca.key", "ecdsa.pem", "ecdsa.key", "rsa.pem", "rsa.key")


def make_certs(directory: Path | str | None = None, names: Iterable[str] | None = None) -> CertSet:
    """Runs ``rampart certs dev --out DIR [--name N ...]`` and checks its output files."""
    names = list(names or [])
    directory = Path(directory or temp_dir() / ("certs-" + (names[0] if names else "default")))
    directory.mkdir(parents=True, exist_ok=True)
    argv = [str(rampart_bin()), "certs", "dev", "--out", str(directory)]
    for n in names:
        argv += ["--name", n]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    for f in CERT_FILES:
        check((directory / f).is_file(), f"rampart certs dev did not write {f}")
    for f in ("ca.key", "ecdsa.key", "rsa.key"):
        mode = (directory / f).stat().st_mode & 0o777
        check(mode == 0o600, f"{f} has mode {mode:o}, expected 600")
    return CertSet(directory, names or [SITE, "foobar.com"])


@dataclasses.dataclass
class CertInfo:
    names: list[str]  # SAN DNS names
    key_type: str     # "EC" or "RSA"
    subject: str


def cert_info(pem: str) -> CertInfo:
    """SAN DNS names, public key type and subject of a PEM certificate (openssl x509)."""
    r = subprocess.run(["openssl", "x509", "-noout", "-text"], input=pem, capture_output=True, text=True,
                       timeout=30)
    check(r.returncode == 0, f"openssl x509 failed: {r.stderr.strip()}")
    names = re.findall(r"DNS:([^,\s]+)", r.stdout)
    algo = re.search(r"Public Key Algorithm: (\S+)", r.stdout)
    key = {"id-ecPublicKey": "EC", "rsaEncryption": "RSA"}.get(algo.group(1) if algo else "", "?")
    subject = re.search(r"Subject: (.*)", r.stdout)
    return CertInfo(names, key, subject.group(1).strip() if subject else "")
