"""The BigQuery Storage Read API client for query results (google-cloud-bigquery-storage).

BigQuery writes every query's result to a destination table (an anonymous one for plain
queries); ``RowIterator.to_arrow(bqstorage_client=...)`` reads it through read sessions
and parallel ``ReadRows`` streams of Arrow record batches, much faster than paging
``getQueryResults`` as JSON. The client is built on the BigQuery client's own
credentials, so a token refreshed for one is refreshed for both.

``storage_api_endpoint`` (a driver option) points it elsewhere than
``bigquerystorage.googleapis.com``: ``host:port`` keeps TLS, ``http://host:port`` is
plaintext gRPC for local emulators, where gRPC sends no call credentials, so the token
goes as ``authorization`` metadata on each call (taken from the credentials, refreshed
first when they are no longer valid).
"""

from __future__ import annotations

import importlib.util
from typing import Any


def storage_installed() -> bool:
    """True when google-cloud-bigquery-storage (and so the Storage Read API) is available."""
    try:
        return importlib.util.find_spec("google.cloud.bigquery_storage_v1") is not None
    except ImportError:
        return False


def read_client(client: Any, endpoint: str | None = None) -> Any:
    """A ``BigQueryReadClient`` at ``endpoint`` (None: Google's) with ``client``'s
    credentials."""
    from google.cloud import bigquery_storage_v1

    credentials = client._credentials  # the credentials the BigQuery client was built with
    if endpoint is None:
        return bigquery_storage_v1.BigQueryReadClient(  # type: ignore[no-untyped-call]
            credentials=credentials
        )
    if not endpoint.startswith("http://"):
        return bigquery_storage_v1.BigQueryReadClient(  # type: ignore[no-untyped-call]
            credentials=credentials, client_options={"api_endpoint": endpoint}
        )
    import grpc  # type: ignore[import-untyped,unused-ignore]
    from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
        BigQueryReadGrpcTransport,
    )

    channel = grpc.insecure_channel(
        endpoint.removeprefix("http://"),
        options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)],
    )
    channel = grpc.intercept_channel(channel, _interceptor_class()(credentials))
    return bigquery_storage_v1.BigQueryReadClient(  # type: ignore[no-untyped-call]
        transport=BigQueryReadGrpcTransport(channel=channel)
    )


def _interceptor_class() -> type:
    import grpc  # type: ignore[import-untyped,unused-ignore]

    unary: Any = grpc.UnaryUnaryClientInterceptor
    stream: Any = grpc.UnaryStreamClientInterceptor

    class TokenMetadata(unary, stream):  # type: ignore[misc]
        """Adds ``authorization: Bearer <token>`` from google-auth credentials to each call."""

        def __init__(self, credentials: Any) -> None:
            self.credentials = credentials

        def _details(self, details: Any) -> Any:
            from google.auth.transport.requests import Request

            headers: dict[str, str] = {}
            self.credentials.before_request(Request(), "POST", details.method, headers)
            auth = headers.get("authorization") or headers.get("Authorization", "")
            return details._replace(metadata=[*(details.metadata or []), ("authorization", auth)])

        def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            return continuation(self._details(details), request)

        def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
            return continuation(self._details(details), request)

    return TokenMetadata
