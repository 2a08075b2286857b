"""TLS on a listener: the certificate, key and client CA, loaded once at validation."""

from __future__ import annotations

import ssl
from typing import Self

from pydantic import (
    model_validator,
)

from processor.config.base import Frozen, field_problems
from processor.config.scalars import ExistingFile


class _KeyNeedsPassword(Exception):
    """Raised from the password callback: we cannot unlock an encrypted key at start-up."""


def _refuse_password() -> bytes:
    """Password callback for ``load_cert_chain`` that never prompts on the terminal."""
    raise _KeyNeedsPassword


def _tls_pair_problems(cert: str | None, key: str | None, ca: str | None) -> list[tuple[str, str]]:
    """What is missing: a certificate needs its key and vice versa; a client CA needs both."""
    problems: list[tuple[str, str]] = []
    if cert is not None and key is None:
        problems.append(("key_file", "required when cert_file is set"))
    if key is not None and cert is None:
        problems.append(("cert_file", "required when key_file is set"))
    if ca is not None and cert is None and key is None:
        problems.append(("cert_file", "required when client_ca_file is set (mTLS needs TLS)"))
    return problems


def _pem_problems(cert: str, key: str, ca: str | None) -> list[tuple[str, str]]:
    """Load the PEM files as the servers will, so bad material fails at start-up."""
    problems = [("cert_file", f"no PEM certificate in {cert}")] if not _has_certs(cert) else []
    if not problems:
        problems += _key_problems(cert, key)
    if ca is not None and not _has_certs(ca):
        problems.append(("client_ca_file", f"no PEM certificate in {ca}"))
    return problems


def _has_certs(path: str) -> bool:
    """True when ``path`` holds at least one readable PEM certificate."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError, ValueError):
        return False
    return True


def _key_problems(cert: str, key: str) -> list[tuple[str, str]]:
    """Why ``key`` cannot serve ``cert`` (none when it can)."""
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key, password=_refuse_password)
    except _KeyNeedsPassword:
        return [("key_file", f"{key} is encrypted; use an unencrypted PEM key")]
    except (ssl.SSLError, OSError) as exc:
        if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
            return [("key_file", f"{key} does not match the certificate in cert_file")]
        return [("key_file", f"no PEM private key in {key}")]
    return []


class TlsConfig(Frozen):
    """TLS on a listener: certificate and key; with ``client_ca_file``, mutual TLS.

    Off while ``cert_file`` is unset. The files are loaded once during validation,
    so a wrong or mismatched file is a config error rather than a failed handshake.
    """

    cert_file: ExistingFile | None = None
    key_file: ExistingFile | None = None
    # Clients must present a certificate issued by a CA in this bundle (mTLS).
    client_ca_file: ExistingFile | None = None

    @property
    def enabled(self) -> bool:
        """True when the listener serves TLS."""
        return self.cert_file is not None

    @model_validator(mode="after")
    def _check_files(self) -> Self:
        """Certificate and key come together and must load; a client CA needs both."""
        problems = _tls_pair_problems(self.cert_file, self.key_file, self.client_ca_file)
        if not problems and self.cert_file is not None and self.key_file is not None:
            problems = _pem_problems(self.cert_file, self.key_file, self.client_ca_file)
        if problems:
            raise field_problems(type(self).__name__, problems)
        return self
