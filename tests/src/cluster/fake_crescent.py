#!/usr/bin/env python3
"""A stand-in for the `crescent` binary in up_test.cc: plays `kvstore master`, `conductor`,
`prefill-node` and `decode-node` just far enough for LocalCluster (ready lines, the conductor's
/metrics node gauges and /v1/models). Nodes "register" by creating a file in $FAKE_CLUSTER_DIR;
the node named in $FAKE_DIE_NODE exits with status 5 instead of starting."""
import http.server
import os
import signal
import sys
import time


def flag(name, default=None):
    args = sys.argv[1:]
    return args[args.index(name) + 1] if name in args else default


def ready(role, node_id, grpc, http):
    print(f"crescent: {role} {node_id} ready grpc={grpc} http={http}", flush=True)


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    state = os.environ["FAKE_CLUSTER_DIR"]
    role = sys.argv[1]
    if role == "kvstore":
        print("listening on", flag("--listen"), flush=True)
    elif role == "conductor":
        port = int(flag("--port"))

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/metrics":
                    names = os.listdir(state)
                    p = sum(n.startswith("prefill") for n in names)
                    d = sum(n.startswith("decode") for n in names)
                    body = ("# TYPE crescent:cluster_nodes gauge\n"
                            f"crescent:cluster_nodes{{role=\"prefill\"}} {p}\n"
                            f"crescent:cluster_nodes{{role=\"decode\"}} {d}\n").encode()
                elif self.path == "/v1/models":
                    body = b'{"object":"list","data":[{"id":"fake-model","object":"model"}]}'
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.HTTPServer(("127.0.0.1", port), Handler)
        ready("conductor", "-", flag("--grpc-listen"), f"127.0.0.1:{port}")
        server.serve_forever()
    else:
        node_id = flag("--node-id")
        if os.environ.get("FAKE_DIE_NODE") == node_id:
            print(node_id, "failing on purpose", flush=True)
            sys.exit(5)
        ready(role, node_id, flag("--grpc-listen"), "127.0.0.1:" + flag("--metrics-port"))
        time.sleep(0.3)  # The conductor learns of it a little later, as with real heartbeats.
        open(os.path.join(state, node_id), "w").close()
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
