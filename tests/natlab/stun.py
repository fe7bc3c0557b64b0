#!/usr/bin/env python3
"""A minimal STUN server for the NAT lab (RFC 5389 Binding only): answers
each Binding Request from the address it came from with the source address
seen (MAPPED-ADDRESS and XOR-MAPPED-ADDRESS). miniupnpd asks it for the
router's public address (ext_perform_stun), since the lab's "internet" uses
documentation addresses that miniupnpd will not take from an interface.

Usage: stun.py ADDR PORT; prints "ready" once bound."""
import socket
import struct
import sys

COOKIE = 0x2112A442


def main():
    addr, port = sys.argv[1], int(sys.argv[2])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, port))
    print("ready", flush=True)
    while True:
        data, (ip, sport) = sock.recvfrom(2048)
        if len(data) < 20 or data[0:2] != b"\x00\x01":
            continue
        txid = data[8:20]
        packed = socket.inet_aton(ip)
        mapped = struct.pack("!HHBBH4s", 0x0001, 8, 0, 1, sport, packed)
        xip = struct.unpack("!I", packed)[0] ^ COOKIE
        xport = sport ^ (COOKIE >> 16)
        xor = struct.pack("!HHBBHI", 0x0020, 8, 0, 1, xport, xip)
        attrs = mapped + xor
        header = struct.pack("!HHI", 0x0101, len(attrs), COOKIE) + txid
        sock.sendto(header + attrs, (ip, sport))


if __name__ == "__main__":
    main()
