"""Two real SPIRE trust domains federated over SPIFFE bundle endpoints (https_spiffe), for tests.

The remote trust domain's server runs alone, with a short CA TTL so that its CA rotates, and so
its published bundle changes, every minute; the local one runs a server and an agent whose
workload entry federates with the remote. Both listen on 127.0.0.1 only.
"""

from __future__ import annotations

from harness.local_spire import LocalSpire, free_port

REMOTE_TRUST_DOMAIN = "federated.test"
# SPIRE refreshes a federated bundle at most once a minute, whatever the hint says.
REFRESH_HINT = 60


class Federation:
    def __init__(self, remote_ca_ttl: str = "2m") -> None:
        self.remote_port = free_port()
        self.remote = LocalSpire(
            trust_domain=REMOTE_TRUST_DOMAIN,
            server_extra=f"""  ca_ttl = "{remote_ca_ttl}"
  default_x509_svid_ttl = "20s"
  default_jwt_svid_ttl = "20s"
  federation {{
    bundle_endpoint {{
      address = "127.0.0.1"
      port = {self.remote_port}
      refresh_hint = "{REFRESH_HINT}s"
      profile "https_spiffe" {{}}
    }}
  }}""",
        )
        self.local = LocalSpire(
            server_extra=f"""  federation {{
    federates_with "{REMOTE_TRUST_DOMAIN}" {{
      bundle_endpoint_url = "https://127.0.0.1:{self.remote_port}"
      bundle_endpoint_profile "https_spiffe" {{
        endpoint_spiffe_id = "spiffe://{REMOTE_TRUST_DOMAIN}/spire/server"
      }}
    }}
  }}""",
        )
        self.entry_id: str | None = None

    def start(self) -> Federation:
        try:
            self.remote.start_server_only()
            self.local.start()
            # The first bundle comes by hand, as the https_spiffe profile requires: after it the
            # local server keeps it current from the remote's bundle endpoint.
            path = self.local.dir / "federated-bundle.json"
            path.write_text(self.remote.server_cli("bundle", "show", "-format", "spiffe"))
            self.local.server_cli(
                "bundle",
                "set",
                "-format",
                "spiffe",
                "-id",
                f"spiffe://{REMOTE_TRUST_DOMAIN}",
                "-path",
                str(path),
            )
            # The workload's own entry now also federates with the remote trust domain.
            if self.local.entry_id:
                self.local.delete_entry(self.local.entry_id)
            self.local.entry_id = self.local.create_entry(federates_with=(REMOTE_TRUST_DOMAIN,))
            self.local.wait_for_svid()
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.local.stop()
        self.remote.stop()

    def __enter__(self) -> Federation:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
