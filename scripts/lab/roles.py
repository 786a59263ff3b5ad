"""Programs that run inside the lab's namespaces: pod server and HTTP clients.

    serve  an HTTP/1.1 server whose `GET /` body names its node and pod
    load   GET requests over separate TCP connections from a thread pool, optionally
           from recorded source ports so that the same 5-tuples are replayed
    hold   keep-alive connections held open between two requests, driven over
           stdin and stdout so a caller can change Spike's backends in between
    stream keep-alive connections that each make a request every interval until a line
           arrives on stdin, reporting per connection the longest time without a
           response

The clients print JSON on stdout. Python 3 standard library only.
"""

import argparse
import concurrent.futures
import json
import select
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Largest response a client accepts, in bytes. A pod's body is one short line.
MAX_RESPONSE_BYTES = 65536


class PodHandler(BaseHTTPRequestHandler):
    """Serves `GET /` with the body `node=NAME pod=NAME`.

    The connection stays open unless the request carries `Connection: close`.
    """

    protocol_version = "HTTP/1.1"
    # Seconds an idle keep-alive connection stays open.
    timeout = 60
    node = ""
    pod = ""

    def do_GET(self):
        body = f"node={self.node} pod={self.pod}\n".encode("ascii")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        # One line per request would bury the demo's output.
        pass


def serve(args):
    PodHandler.node = args.node
    PodHandler.pod = args.pod
    server = ThreadingHTTPServer(("0.0.0.0", args.port), PodHandler)
    server.daemon_threads = True
    print(f"{args.node}/{args.pod} listening on port {args.port}", flush=True)
    server.serve_forever()


class ResponseError(Exception):
    pass


def read_response(sock, until_close):
    """Read one HTTP response and return its status and body.

    With until_close the server ends the body by closing the connection, otherwise
    Content-Length gives its size and the connection stays usable.
    """
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ResponseError("connection closed before the response headers ended")
        data += chunk
        if len(data) > MAX_RESPONSE_BYTES:
            raise ResponseError("response headers too long")
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if until_close:
        # Reading to the end lets the server close first, so the TIME_WAIT state stays
        # on the server and the client can reuse this source port for a replay.
        while chunk := sock.recv(4096):
            body += chunk
            if len(body) > MAX_RESPONSE_BYTES:
                raise ResponseError("response body too long")
    elif length is None:
        raise ResponseError("keep-alive response without Content-Length")
    else:
        while len(body) < length:
            chunk = sock.recv(4096)
            if not chunk:
                raise ResponseError(f"body ended after {len(body)} of {length} bytes")
            body += chunk
    return status, body.decode("ascii", "replace")


def parse_body(body):
    """Return the node and pod named by a pod server's body."""
    fields = dict(part.split("=", 1) for part in body.split() if "=" in part)
    return fields.get("node", ""), fields.get("pod", "")


def http_request(sock, host, keep_alive):
    connection = "keep-alive" if keep_alive else "close"
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: {connection}\r\n\r\n"
    sock.sendall(request.encode("ascii"))
    status, body = read_response(sock, until_close=not keep_alive)
    if status != 200:
        raise ResponseError(f"HTTP status {status}")
    return parse_body(body)


def open_connection(vip, port, source_port, timeout_s):
    """Connect to vip:port, binding to source_port first unless it is 0."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        if source_port:
            # The server closed the previous connection on this port first, so the
            # TIME_WAIT state is on the server's side. SO_REUSEADDR lets the bind
            # succeed even if a socket on this port lingers here anyway.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("0.0.0.0", source_port))
        sock.connect((vip, port))
    except OSError:
        sock.close()
        raise
    return sock


def one_request(index, vip, port, source_port, timeout_s):
    result = {"index": index, "source_port": source_port, "node": "", "pod": "", "error": ""}
    started = time.monotonic()
    try:
        sock = open_connection(vip, port, source_port, timeout_s)
    except OSError as error:
        origin = f" from port {source_port}" if source_port else ""
        result["error"] = f"connect{origin}: {error}"
        return result
    with sock:
        result["source_port"] = sock.getsockname()[1]
        try:
            result["node"], result["pod"] = http_request(sock, vip, keep_alive=False)
        except (OSError, ResponseError, ValueError) as error:
            result["error"] = f"request: {error}"
    result["elapsed_ms"] = round((time.monotonic() - started) * 1000, 1)
    return result


def load(args):
    if args.source_ports:
        with open(args.source_ports, encoding="utf-8") as ports_file:
            source_ports = json.load(ports_file)
    else:
        source_ports = [0] * args.requests
    deadline = time.monotonic() + args.deadline_s
    results = []
    skipped = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.workers) as pool:
        futures = []
        for index, source_port in enumerate(source_ports):
            futures.append(
                pool.submit(
                    bounded_request, deadline, index, args.vip, args.port, source_port,
                    args.timeout_s,
                )
            )
        for future in futures:
            result = future.result()
            if result is None:
                skipped += 1
            else:
                results.append(result)
    json.dump({"results": results, "skipped_after_deadline": skipped}, sys.stdout)
    sys.stdout.write("\n")


def bounded_request(deadline, index, vip, port, source_port, timeout_s):
    """Run one request unless the whole run's deadline has passed."""
    if time.monotonic() >= deadline:
        return None
    return one_request(index, vip, port, source_port, timeout_s)


def emit(event, results):
    print(json.dumps({"event": event, "results": results}), flush=True)


def hold(args):
    connections = []
    opened = []
    for offset in range(args.count):
        source_port = args.first_port + offset
        result = {"source_port": source_port, "node": "", "pod": "", "error": ""}
        try:
            sock = open_connection(args.vip, args.port, source_port, args.timeout_s)
            result["node"], result["pod"] = http_request(sock, args.vip, keep_alive=True)
            connections.append(sock)
        except (OSError, ResponseError, ValueError) as error:
            result["error"] = str(error)
            connections.append(None)
        opened.append(result)
    emit("opened", opened)

    # Wait for the caller's go-ahead, bounded so an abandoned run still ends.
    ready, _, _ = select.select([sys.stdin], [], [], args.wait_s)
    if not ready or not sys.stdin.readline():
        emit("abandoned", [])
        return

    after = []
    for result, sock in zip(opened, connections):
        second = {"source_port": result["source_port"], "node": "", "pod": "", "error": ""}
        if sock is None:
            second["error"] = "not open"
        else:
            try:
                second["node"], second["pod"] = http_request(sock, args.vip, keep_alive=True)
            except (OSError, ResponseError, ValueError) as error:
                second["error"] = str(error) or type(error).__name__
            sock.close()
        after.append(second)
    emit("after", after)


def stream_connection(sock, vip, interval_s, stop, result):
    """Make a request on sock every interval_s until stop is set or a request fails.

    Records the number of responses, the node and pod that responded (a change is an
    error), and the longest time between two responses.
    """
    last_response = time.monotonic()
    while not stop.is_set():
        try:
            node, pod = http_request(sock, vip, keep_alive=True)
        except (OSError, ResponseError, ValueError) as error:
            result["error"] = str(error) or type(error).__name__
            break
        now = time.monotonic()
        gap_ms = round((now - last_response) * 1000)
        result["longest_gap_ms"] = max(result["longest_gap_ms"], gap_ms)
        last_response = now
        result["responses"] += 1
        if (node, pod) != (result["node"], result["pod"]):
            result["error"] = f"answered by {node}/{pod} after {result['node']}/{result['pod']}"
            break
        stop.wait(interval_s)
    sock.close()


# Connect attempts per streamed connection. On a loaded machine a first connect has
# failed at once with ENETUNREACH while the router had its route to the VIP.
# NOTE: the sender of that error is unknown. The failure and drain checks concern open
# connections, so a retry keeps it from failing them, and the test prints the retries.
STREAM_CONNECT_ATTEMPTS = 3
STREAM_CONNECT_RETRY_S = 0.2


def open_streamed_connection(args, result):
    """Open one streamed connection and record the connect attempts it took in result."""
    for attempt in range(1, STREAM_CONNECT_ATTEMPTS):
        result["connect_attempts"] = attempt
        try:
            return open_connection(args.vip, args.port, 0, args.timeout_s)
        except OSError:
            time.sleep(STREAM_CONNECT_RETRY_S)
    result["connect_attempts"] = STREAM_CONNECT_ATTEMPTS
    return open_connection(args.vip, args.port, 0, args.timeout_s)


def stream(args):
    results = []
    sockets = []
    for index in range(args.count):
        result = {
            "index": index, "source_port": 0, "node": "", "pod": "", "responses": 0,
            "longest_gap_ms": 0, "error": "",
        }
        try:
            sock = open_streamed_connection(args, result)
            result["source_port"] = sock.getsockname()[1]
            result["node"], result["pod"] = http_request(sock, args.vip, keep_alive=True)
            sockets.append(sock)
        except (OSError, ResponseError, ValueError) as error:
            result["error"] = f"open: {error}"
            sockets.append(None)
        results.append(result)

    stop = threading.Event()
    threads = []
    for sock, result in zip(sockets, results):
        if sock is None:
            continue
        thread = threading.Thread(
            target=stream_connection, args=(sock, args.vip, args.interval_s, stop, result),
            daemon=True,
        )
        thread.start()
        threads.append(thread)
    emit("opened", results)

    # Stream until a line arrives on stdin, bounded so an abandoned run still ends.
    select.select([sys.stdin], [], [], args.max_duration_s)
    stop.set()
    for thread in threads:
        thread.join(args.timeout_s + args.interval_s + 1)
    emit("streamed", results)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    serve_parser = commands.add_parser("serve", help="run a pod's HTTP server")
    serve_parser.add_argument("--node", required=True)
    serve_parser.add_argument("--pod", required=True)
    serve_parser.add_argument("--port", type=int, default=80)

    load_parser = commands.add_parser("load", help="GET requests, one TCP connection each")
    load_parser.add_argument("--vip", required=True)
    load_parser.add_argument("--port", type=int, default=80)
    load_parser.add_argument("--requests", type=int, default=1000)
    load_parser.add_argument(
        "--source-ports", help="JSON list of source ports to bind, one request each"
    )
    load_parser.add_argument("--workers", type=int, default=8, help="concurrent connections")
    load_parser.add_argument(
        "--timeout-s", type=float, default=5.0, help="socket timeout per request, seconds"
    )
    load_parser.add_argument(
        "--deadline-s", type=float, default=120.0,
        help="seconds after which no new request starts",
    )

    hold_parser = commands.add_parser("hold", help="keep-alive connections held open")
    hold_parser.add_argument("--vip", required=True)
    hold_parser.add_argument("--port", type=int, default=80)
    hold_parser.add_argument("--count", type=int, default=30)
    hold_parser.add_argument(
        "--first-port", type=int, default=61000,
        help="source port of the first connection; the others follow it",
    )
    hold_parser.add_argument("--timeout-s", type=float, default=3.0)
    hold_parser.add_argument(
        "--wait-s", type=float, default=120.0,
        help="seconds to wait on stdin for the go-ahead before giving up",
    )

    stream_parser = commands.add_parser(
        "stream", help="keep-alive connections that make a request every interval"
    )
    stream_parser.add_argument("--vip", required=True)
    stream_parser.add_argument("--port", type=int, default=80)
    stream_parser.add_argument("--count", type=int, default=100)
    stream_parser.add_argument(
        "--interval-s", type=float, default=0.1, help="seconds between two requests"
    )
    stream_parser.add_argument(
        "--timeout-s", type=float, default=10.0,
        help="seconds a request may wait for its response before the connection counts "
        "as lost",
    )
    stream_parser.add_argument(
        "--max-duration-s", type=float, default=120.0,
        help="seconds after which streaming stops without a line on stdin",
    )

    args = parser.parse_args()
    commands_by_name = {"serve": serve, "load": load, "hold": hold, "stream": stream}
    commands_by_name[args.command](args)


if __name__ == "__main__":
    main()
