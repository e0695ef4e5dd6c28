"""The per-lab packet delayer: `python -m labctl.netdelay --lab LAB --queue Q MAC=MS[:JITTER]...`.

The host's kernel has no netem (CONFIG_NET_SCH_NETEM unset), so `labctl net delay`
holds packets in userspace: an iptables NFQUEUE rule (labctl/netfault.py) hands the
lab's bridged IPv4 packets from a delayed node to this process, which gives each
packet's ACCEPT verdict once its delay has passed. Verdicts may come out of order
(by packet id), so one slow packet holds up no other. It speaks nfnetlink_queue
over an AF_NETLINK socket itself (a few dozen lines, no dependency to install on
the host): only the packet's id and source MAC are copied, never its payload.
The rule is `--queue-bypass` and the queue fail-open, so a dead or overrun delayer
lets packets through undelayed rather than blackholing the lab.

Standard library only: it runs as a child of labctl, and `labctl net clear` and
`labctl down` end it (found by its command line, which names the lab).
"""

from __future__ import annotations

import argparse
import heapq
import os
import random
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NETLINK_NO_ENOBUFS = 5
SOL_NETLINK = 270
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_HWADDR = 9
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
NFQA_CFG_F_FAIL_OPEN = 1
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
NF_ACCEPT = 1
QUEUE_MAXLEN = 20000


def _attr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * (-n % 4)


def _message(kind: int, queue: int, attrs: bytes, flags: int = NLM_F_REQUEST) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + attrs
    return (
        struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind, flags, 0, 0) + body
    )


def _attrs(data: bytes) -> dict[int, bytes]:
    out = {}
    while len(data) >= 4:
        n, kind = struct.unpack_from("=HH", data)
        if n < 4:
            break
        out[kind & 0x7FFF] = data[4:n]
        data = data[(n + 3) & ~3 :]
    return out


def _config(sock: socket.socket, queue: int, attrs: bytes) -> None:
    sock.send(_message(NFQNL_MSG_CONFIG, queue, attrs, NLM_F_REQUEST | NLM_F_ACK))
    reply = sock.recv(65536)
    _, kind = struct.unpack_from("=IH", reply)
    if kind == NLMSG_ERROR:
        (code,) = struct.unpack_from("=i", reply, 16)
        if code:
            raise OSError(-code, f"nfnetlink_queue config of queue {queue}: {os.strerror(-code)}")


def bind(queue: int) -> socket.socket:
    """A socket bound to QUEUE, copying metadata only, fail-open."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
    sock.bind((0, 0))
    _config(
        sock, queue, _attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, socket.AF_INET))
    )
    _config(sock, queue, _attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META)))
    _config(sock, queue, _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", QUEUE_MAXLEN)))
    flags = struct.pack("!I", NFQA_CFG_F_FAIL_OPEN)
    _config(sock, queue, _attr(NFQA_CFG_FLAGS, flags) + _attr(NFQA_CFG_MASK, flags))
    return sock


def packets(data: bytes) -> list[tuple[int, str | None]]:
    """(packet id, source MAC or None) of each queued packet in a netlink read."""
    out = []
    while len(data) >= 16:
        n, kind = struct.unpack_from("=IH", data)
        if n < 16:
            break
        if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            a = _attrs(data[20:n])
            hdr = a.get(NFQA_PACKET_HDR)
            if hdr is not None:
                (pid,) = struct.unpack_from("!I", hdr)
                hw = a.get(NFQA_HWADDR)
                mac = None
                if hw is not None:
                    (hwlen,) = struct.unpack_from("!H", hw)
                    mac = ":".join(f"{b:02x}" for b in hw[4 : 4 + min(hwlen, 8)])
                out.append((pid, mac))
        data = data[(n + 3) & ~3 :]
    return out


def verdict(queue: int, packet_id: int) -> bytes:
    return _message(
        NFQNL_MSG_VERDICT, queue, _attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet_id))
    )


def run(queue: int, delays: dict[str, tuple[float, float]]) -> None:
    """Delay every packet of QUEUE by its source MAC's (delay, jitter) in seconds."""
    sock = bind(queue)
    default = max(delays.values(), default=(0.0, 0.0))
    due: list[tuple[float, int]] = []
    print(f"bound to queue {queue}", flush=True)
    while True:
        timeout = max(0.0, due[0][0] - time.monotonic()) if due else None
        ready, _, _ = select.select([sock], [], [], timeout)
        if ready:
            now = time.monotonic()
            for pid, mac in packets(sock.recv(1 << 20)):
                d, j = delays.get(mac or "", default)
                heapq.heappush(due, (now + max(0.0, d + random.uniform(-j, j)), pid))
        now = time.monotonic()
        while due and due[0][0] <= now:
            _, pid = heapq.heappop(due)
            sock.send(verdict(queue, pid))


def parse_delay(text: str) -> tuple[str, tuple[float, float]]:
    """ "MAC=MS[:JITTER_MS]" -> (mac, (seconds, seconds))."""
    mac, _, ms = text.partition("=")
    d, _, j = ms.partition(":")
    return mac.lower(), (float(d) / 1000, float(j or 0) / 1000)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="labctl.netdelay")
    ap.add_argument("--lab", required=True)
    ap.add_argument("--queue", type=int, required=True)
    ap.add_argument("delays", nargs="+")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    run(args.queue, dict(parse_delay(d) for d in args.delays))


if __name__ == "__main__":
    main()
