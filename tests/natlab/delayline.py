#!/usr/bin/env python3
"""A userspace delay line for the NAT lab (this kernel has no sch_netem).

Creates two TAP devices and forwards every Ethernet frame from one to the
other after a fixed delay, both ways. The lab bridges one TAP with a site's
WAN link and the other with the internet bridge. TAPs opened without a vnet
header advertise no GSO, so the kernel hands them ordinary frames.

The delay is the same for every frame, so each direction is a plain FIFO:
frames leave in the order they came, each at its arrival time plus the
delay. It must carry 100 Mbit/s (about 8,500 full frames a second each way)
without becoming the bottleneck: frames are read in batches until the TAP
is empty, and nothing is done per frame beyond a read, an append and a
write. Rate limits and queue limits are the lab's tbf qdiscs, not this.

Usage: delayline.py TAP_A TAP_B DELAY_MS   (prints "ready" once both exist)
"""
import collections
import fcntl
import os
import select
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
# Frames read from one TAP before looking at the other and at what is due.
BATCH = 64


def open_tap(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def main():
    name_a, name_b, delay_ms = sys.argv[1], sys.argv[2], float(sys.argv[3])
    a, b = open_tap(name_a), open_tap(name_b)
    delay = delay_ms / 1000.0
    # Per input fd: (output fd, FIFO of (due, frame)).
    lines = {a: (b, collections.deque()), b: (a, collections.deque())}
    poller = select.epoll()
    poller.register(a, select.EPOLLIN)
    poller.register(b, select.EPOLLIN)
    read, write, monotonic = os.read, os.write, time.monotonic
    print("ready", flush=True)
    while True:
        heads = [queue[0][0] for _, queue in lines.values() if queue]
        timeout = max(0.0, min(heads) - monotonic()) if heads else -1
        events = poller.poll(timeout)
        now = monotonic()
        due = now + delay
        for fd, _ in events:
            queue = lines[fd][1]
            for _ in range(BATCH):
                try:
                    queue.append((due, read(fd, 65536)))
                except BlockingIOError:
                    break
        now = monotonic()
        for out, queue in lines.values():
            while queue and queue[0][0] <= now:
                try:
                    write(out, queue.popleft()[1])
                except OSError:
                    pass  # a frame the kernel refuses is lost, as on a link


if __name__ == "__main__":
    main()
