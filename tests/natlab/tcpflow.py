#!/usr/bin/env python3
"""Plain TCP downloads for the NAT lab's benches (iperf3 is not installed).

  tcpflow.py serve PORT
      Serves every connection on its own thread: reads the 8-byte number of
      bytes wanted (big-endian; 0 = until the client closes) and a 16-byte
      congestion control name (NUL-padded; empty for the kernel's default),
      sends that many zero bytes with it, closes. Prints "ready" once
      listening.
  tcpflow.py fetch HOST PORT BYTES [SECONDS [CONGESTION]]
      Downloads BYTES (0 = without end) for at most SECONDS, printing one JSON
      line every 100 ms ({"bytes": received so far, "secs": since connect})
      and a last one with "done": true. The sender uses CONGESTION (a name
      in net.ipv4.tcp_available_congestion_control) or the kernel's default
      (BBR on the lab machine).
"""
import json
import socket
import struct
import sys
import threading
import time

BLOCK = bytes(1 << 20)


def serve(port):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(16)
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=send_to, args=(conn,), daemon=True).start()


def send_to(conn):
    try:
        wanted, congestion = struct.unpack(">Q16s", recv_exactly(conn, 24))
        congestion = congestion.rstrip(b"\0")
        if congestion:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, congestion)
        left = wanted if wanted else None
        view = memoryview(BLOCK)
        while left is None or left > 0:
            size = len(view) if left is None else min(left, len(view))
            conn.sendall(view[:size])
            if left is not None:
                left -= size
    except OSError:
        pass
    finally:
        conn.close()


def recv_exactly(conn, size):
    data = b""
    while len(data) < size:
        part = conn.recv(size - len(data))
        if not part:
            raise OSError("closed early")
        data += part
    return data


def fetch(host, port, wanted, seconds, congestion):
    started = time.monotonic()
    conn = socket.create_connection((host, port))
    conn.sendall(struct.pack(">Q16s", wanted, congestion.encode()))
    received, next_report = 0, started
    buffer = bytearray(1 << 20)
    while wanted == 0 or received < wanted:
        now = time.monotonic()
        if seconds is not None and now - started >= seconds:
            break
        if now >= next_report:
            report(received, now - started, False)
            next_report = now + 0.1
        conn.settimeout(0.1)
        try:
            size = conn.recv_into(buffer)
        except socket.timeout:
            continue
        if size == 0:
            break
        received += size
    report(received, time.monotonic() - started, True)
    conn.close()


def report(received, secs, done):
    print(json.dumps({"bytes": received, "secs": secs, "done": done}), flush=True)


def main():
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    elif sys.argv[1] == "fetch":
        seconds = float(sys.argv[5]) if len(sys.argv) > 5 else None
        congestion = sys.argv[6] if len(sys.argv) > 6 else ""
        fetch(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), seconds, congestion)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
