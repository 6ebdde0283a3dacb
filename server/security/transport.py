"""TLS and mutual TLS for a replica's gRPC port, with certificate files reloaded when they change."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger(__name__)


class TransportError(ValueError):
    """The TLS settings name files that are missing or do not go together."""


@dataclass(frozen=True)
class SecurityOptions:
    """How callers reach a replica and what each may do."""

    # PEM certificate chain the server presents; with tls_key_file it turns TLS on. Empty:
    # plaintext. Replaced files are picked up by the next connection, no restart needed.
    tls_cert_file: str = ""
    # PEM private key of tls_cert_file.
    tls_key_file: str = ""
    # PEM certificates of the authorities that sign callers' client certificates. Set:
    # mutual TLS, every caller must present a certificate they signed.
    tls_client_ca_file: str = ""
    # TOML file naming each caller (bearer token digests and/or client certificate names),
    # its role (probe, operator, admin) and its networks (docs/security.md). Set: every
    # call but health checks and reflection must come from a caller it names; reloaded
    # when it changes. Empty: every caller may do everything (a warning at start-up).
    access_policy_file: str = ""
    # Serve gRPC server reflection (service and message descriptions for grpcurl and the
    # like), which needs no credentials.
    reflection: bool = True

    def __post_init__(self) -> None:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise TransportError("tls_cert_file and tls_key_file go together: set both or neither")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise TransportError("tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert_file)


class CertificateFiles:
    """Reads the server's certificate, key and client CA, and tells when any file changed.

    gRPC asks on every new connection (dynamic_ssl_server_credentials); a change is seen
    by one stat() per file, and a file caught half-written is retried on the next one.
    """

    def __init__(self, options: SecurityOptions) -> None:
        self.paths = tuple(
            Path(p) for p in (options.tls_cert_file, options.tls_key_file, options.tls_client_ca_file) if p
        )
        self.client_ca = bool(options.tls_client_ca_file)
        self._seen = self._stamps()

    def _stamps(self) -> tuple[tuple[int, int], ...]:
        stamps = []
        for path in self.paths:
            try:
                stat = path.stat()
            except OSError as exc:
                raise TransportError(f"cannot read TLS file {path}: {exc.strerror}") from exc
            stamps.append((stat.st_mtime_ns, stat.st_size))
        return tuple(stamps)

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        """The files as they are now."""
        chain, key, *ca = (path.read_bytes() for path in self.paths)
        if b"PRIVATE KEY" not in key:
            raise TransportError(f"{self.paths[1]} holds no PEM private key")
        return grpc.ssl_server_certificate_configuration([(key, chain)], ca[0] if ca else None)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration when a file changed since the last one, else None."""
        try:
            stamps = self._stamps()
            if stamps == self._seen:
                return None
            configuration = self.configuration()
        except (OSError, TransportError) as exc:
            log.error("TLS files changed but cannot be read (%s); keeping the certificate in use", exc)
            return None
        self._seen = stamps
        log.info("TLS certificate files changed; new connections use them")
        return configuration


def server_credentials(options: SecurityOptions) -> grpc.ServerCredentials | None:
    """Credentials for the listening port, or None for plaintext."""
    if not options.tls:
        return None
    files = CertificateFiles(options)
    try:
        initial = files.configuration()
    except OSError as exc:
        raise TransportError(f"cannot read TLS files: {exc}") from exc
    return grpc.dynamic_ssl_server_credentials(initial, files.fetch, files.client_ca)
