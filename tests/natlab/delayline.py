#!/usr/bin/env python3
"""A userspace delay line for the NAT lab (this kernel has no sch_netem).

Creates two TAP devices and forwards every Ethernet frame from one to the
other after a fixed delay, both ways. The lab bridges one TAP with a site's
WAN link and the other with the internet bridge. TAPs opened without a vnet
header advertise no GSO, so the kernel hands them ordinary frames.

Usage: delayline.py TAP_A TAP_B DELAY_MS   (prints "ready" once both exist)
"""
import fcntl
import heapq
import os
import select
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


def open_tap(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def main():
    name_a, name_b, delay_ms = sys.argv[1], sys.argv[2], float(sys.argv[3])
    a, b = open_tap(name_a), open_tap(name_b)
    other = {a: b, b: a}
    delay = delay_ms / 1000.0
    queue = []  # (due, sequence, out_fd, frame)
    sequence = 0
    print("ready", flush=True)
    while True:
        timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else None
        readable, _, _ = select.select([a, b], [], [], timeout)
        now = time.monotonic()
        for fd in readable:
            while True:
                try:
                    frame = os.read(fd, 65536)
                except BlockingIOError:
                    break
                heapq.heappush(queue, (now + delay, sequence, other[fd], frame))
                sequence += 1
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, out, frame = heapq.heappop(queue)
            try:
                os.write(out, frame)
            except OSError:
                pass  # a full TAP queue drops the frame, as a link would


if __name__ == "__main__":
    main()
