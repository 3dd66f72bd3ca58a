#!/usr/bin/env python3
"""A real trace collector for the tracing tests, independent of Trellis's encoders.

    trace_collector.py zipkin   # Zipkin API v2: POST /api/v2/spans (JSON)
    trace_collector.py otlp     # OTLP/gRPC TraceService.Export, decoded by the official
                                # opentelemetry-proto Python package (grpcio)

Prints "listening <port>" once ready, then one JSON object per received span on stdout:
{"traceId", "id", "parentId", "name", "kind", "service", "tags": {...}}.
"""
import json
import sys
from concurrent import futures
from http.server import BaseHTTPRequestHandler, HTTPServer


def emit(span):
    sys.stdout.write(json.dumps(span, sort_keys=True) + "\n")
    sys.stdout.flush()


class Zipkin(BaseHTTPRequestHandler):
    def do_POST(self):
        if self.path != "/api/v2/spans":
            self.send_response(404)
            self.end_headers()
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Type", "").split(";")[0] != "application/json":
            self.send_response(415)
            self.end_headers()
            return
        for s in json.loads(body):
            emit({
                "traceId": s["traceId"],
                "id": s["id"],
                "parentId": s.get("parentId"),
                "name": s["name"],
                "kind": s.get("kind"),
                "service": s.get("localEndpoint", {}).get("serviceName"),
                "tags": s.get("tags", {}),
                "duration": s.get("duration"),
            })
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def zipkin():
    server = HTTPServer(("127.0.0.1", 0), Zipkin)
    emit_ready(server.server_address[1])
    server.serve_forever()


def emit_ready(port):
    sys.stdout.write(f"listening {port}\n")
    sys.stdout.flush()


def otlp():
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
    from opentelemetry.proto.trace.v1 import trace_pb2

    kinds = {v: k.replace("SPAN_KIND_", "") for k, v in trace_pb2.Span.SpanKind.items()}

    class Service(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            for rs in request.resource_spans:
                service = None
                for kv in rs.resource.attributes:
                    if kv.key == "service.name":
                        service = kv.value.string_value
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        emit({
                            "traceId": s.trace_id.hex(),
                            "id": s.span_id.hex(),
                            "parentId": s.parent_span_id.hex() or None,
                            "name": s.name,
                            "kind": kinds.get(s.kind),
                            "service": service,
                            "tags": {kv.key: kv.value.string_value for kv in s.attributes},
                            "duration": (s.end_time_unix_nano - s.start_time_unix_nano) // 1000,
                            "error": s.status.code == trace_pb2.Status.STATUS_CODE_ERROR,
                        })
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    emit_ready(port)
    server.wait_for_termination()


if __name__ == "__main__":
    {"zipkin": zipkin, "otlp": otlp}[sys.argv[1]]()
