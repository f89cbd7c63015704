"""A long-lived SDS StreamSecrets stream, kept as Envoy keeps it: the first request names the
resources, each answer is acknowledged with its version and nonce, and every answer after the
first is a push the agent made on its own (a rotated SVID, a changed bundle), which is counted.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Iterator
from typing import Any

from exporter._proto import sds_pb2
from exporter.client import WatchStream, WorkloadClient
from exporter.probes.sds_fetch_secrets import NODE_ID, SdsSettings
from exporter.sds import judge, request
from exporter.store.own import OwnStore
from exporter.watch import StreamWatch

log = logging.getLogger("exporter.watch")


class SdsWatch(StreamWatch):
    stream, job, what = "sds", "sds_watch", "SDS watch"

    def __init__(
        self, client: WorkloadClient, own: OwnStore, settings: SdsSettings, max_stream_age: float
    ) -> None:
        super().__init__(own, max_stream_age)
        self.client = client
        self.settings = settings
        self._acks: queue.Queue[sds_pb2.DiscoveryRequest | None] = queue.Queue()
        # One subscription, as Envoy keeps one per secret: the certificate, which rotates. The
        # agent pushes on every change of the workload's identities and bundles, whichever it is.
        self._names = settings.names[:1]

    def _open(self) -> WatchStream:
        first = request(self._names, self.settings.envoy_version, NODE_ID)
        # A fresh queue per stream: no ACK meant for the last one.
        acks: queue.Queue[sds_pb2.DiscoveryRequest | None] = queue.Queue()
        self._acks = acks

        def requests() -> Iterator[sds_pb2.DiscoveryRequest]:
            yield first
            while True:
                ack = acks.get()
                if ack is None:
                    return
                yield ack

        stream = self.client.stream_secrets(requests(), self.max_stream_age)
        return _Closing(stream, acks)

    def _handle(self, answer: Any, first: bool) -> None:
        # Acknowledged whatever it holds, as Envoy does: a NACK would only make the agent log.
        self._acks.put(
            sds_pb2.DiscoveryRequest(
                version_info=answer.version_info,
                response_nonce=answer.nonce,
                resource_names=list(self._names),
                type_url=answer.type_url,
            )
        )
        judge(answer, self._names, self.settings.svid_name, time.time())


class _Closing(WatchStream):
    """The stream, whose request iterator ends when the stream is cancelled (no thread left waiting)."""

    def __init__(self, stream: WatchStream, acks: queue.Queue[sds_pb2.DiscoveryRequest | None]) -> None:
        super().__init__(stream._call)
        self._acks = acks

    def cancel(self) -> None:
        self._acks.put(None)
        super().cancel()
