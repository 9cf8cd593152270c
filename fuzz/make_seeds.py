#!/usr/bin/env python3
"""Writes the hand-made seed inputs into corpus/<target>/seed-*.

Run from anywhere: python3 fuzz/make_seeds.py. The bytes come from the
captures quoted in shared/docs/peers-protocol.md (4.1, 4.5, 4.7) plus a
typical IPv4 rate table. Input layouts are described at the top of each
fuzz_targets/*.rs file.
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def varint(v):
    if v < 240:
        return bytes([v])
    out = [(v | 0xF0) & 0xFF]
    v = (v - 240) >> 4
    while v >= 128:
        out.append((v | 0x80) & 0xFF)
        v = (v - 128) >> 7
    out.append(v)
    return bytes(out)


def frame(ty, payload):
    return bytes([0x0A, ty]) + varint(len(payload)) + payload


def u32(v):
    return v.to_bytes(4, "big")


TYPE_IDS = {
    "server_id": 0, "http_req_cnt": 9, "http_req_rate": 10, "bytes_in_cnt": 13,
    "server_key": 19, "gpt": 22, "gpc": 23, "gpc_rate": 24,
}
RATES = {3, 5, 8, 10, 12, 14, 16, 18, 21, 26}

# --- DEFINE payloads -------------------------------------------------------
# 4.1 captured: string len 20, expire 30s, gpt(3), gpc(2), gpc_rate(2,5s).
DEF_STR = bytes([0x05, 0x06]) + b"/t_str" + bytes(
    [0x06, 0x15, 0xF0, 0xF1, 0xFE, 0x6E, 0xF0, 0xC4, 0x0D, 0x16, 0x03, 0x17, 0x02,
     0x18, 0x02, 0xF8, 0xA9, 0x01])
# IPv4 table: http_req_cnt + http_req_rate(10s), expire 30s.
DEF_IP = (varint(3) + varint(13) + b"/request_rate" + varint(4) + varint(4)
          + varint((1 << 9) | (1 << 10)) + varint(30000) + varint(10) + varint(10000))
# 4.5 stickiness table `be`: string (32), server_id + server_key.
DEF_BE = (varint(1) + varint(2) + b"be" + varint(6) + varint(32)
          + varint((1 << 0) | (1 << 19)) + varint(0))
# 4.1 second capture: IPv4, all scalar types (0-21, 25, 26), expire 60s, 10 s periods.
bits = 0x63FFFFF
DEF_ALL = varint(6) + varint(5) + b"/t_ip" + varint(4) + varint(4) + varint(bits) + varint(60000)
for t in range(27):
    if bits >> t & 1 and t in RATES:
        DEF_ALL += varint(t) + varint(10000)
# Pre-1.8 form (no expire), and one with an unknown type bit 40 + its parameter.
DEF_OLD = varint(2) + varint(2) + b"/o" + varint(2) + varint(4) + varint(1 << 9)
DEF_UNK = (varint(4) + varint(2) + b"/u" + varint(4) + varint(4) + varint((1 << 9) | (1 << 40))
           + varint(1000) + bytes([40, 7]))

# --- UPDATE payloads ---------------------------------------------------------
# 4.5 captured string update, id 2, key "hello".
UPD_STR = u32(2) + b"\x05hello" + bytes([0, 0, 7, 2, 2, 0xF6, 0x10, 2, 0, 0xF6, 0x10, 2, 0])
# 4.5 captured stickiness updates: define form, then reference form.
UPD_BE1 = u32(1) + b"\x01a" + bytes([5, 4, 1, 2]) + b"s1"
UPD_BE3 = u32(3) + b"\x01c" + bytes([5, 1, 1])
# IPv4 127.0.0.1: http_req_cnt 1234, http_req_rate elapsed 4321 curr 17 prev 250.
UPD_IP = u32(7) + bytes([127, 0, 0, 1]) + varint(1234) + varint(4321) + varint(17) + varint(250)
UPD_IP_INCR = bytes([10, 0, 0, 9]) + varint(1) + varint(0) + varint(1) + varint(0)
UPD_IP_TIMED = u32(9) + u32(25000) + bytes([10, 0, 0, 10]) + varint(3) + varint(10) + varint(3) + varint(0)
ACK = varint(3) + u32(3)  # 4.7: "table 3, up to update 3"

CONTROLS = bytes([0, 0, 0, 1, 0, 2, 0, 3, 0, 4])

STREAM_IP = (frame(0x82, DEF_IP) + frame(0x80, UPD_IP) + frame(0x81, UPD_IP_INCR)
             + frame(0x85, UPD_IP_TIMED) + bytes([0, 4]) + frame(0x84, ACK) + bytes([0, 1]))
STREAM_BE = frame(0x82, DEF_BE) + frame(0x80, UPD_BE1) + frame(0x80, UPD_BE3)
STREAM_STR = frame(0x82, DEF_STR) + frame(0x80, UPD_STR)
STREAM_SWITCH = (frame(0x82, DEF_IP) + frame(0x82, DEF_BE) + frame(0x83, varint(3))
                 + frame(0x81, UPD_IP_INCR) + bytes([0, 0]))
HELLO = b"HAProxyS 2.1\nagg\nhap1 8230 1\n"


def table_header(key_type, key_len, types, sizes=(1, 1, 1), period_s=10):
    """Header bytes of peers_fuzz::table_from."""
    k = {"integer": 0, "ip": 1, "ipv6": 2, "string": 3, "binary": 4}[key_type]
    mask = 0
    for t in types:
        mask |= 1 << TYPE_IDS[t]
    s = (sizes[0] - 1) | (sizes[1] - 1) << 2 | (sizes[2] - 1) << 4
    return bytes([k, (key_len - 1) & 0xFF]) + mask.to_bytes(4, "little") + bytes([s, period_s])


def msg_sel(ty):
    return bytes([{0x80: 0, 0x81: 1, 0x85: 2, 0x86: 3}[ty]])


SEEDS = {
    "framing": {
        "define-str": frame(0x82, DEF_STR),
        "update-str": frame(0x80, UPD_STR),
        "stickiness": STREAM_BE,
        "ipv4-stream": STREAM_IP,
        "controls-errors": CONTROLS + bytes([1, 0, 1, 1, 2, 5]) + bytes([0, 0x85, 1, 7]),
        "define-all": frame(0x82, DEF_ALL) + frame(0x82, DEF_UNK),
    },
    "definition": {
        "captured-str": DEF_STR,
        "ipv4-rate": DEF_IP,
        "stickiness": DEF_BE,
        "all-scalars": DEF_ALL,
        "pre-1.8": DEF_OLD,
        "unknown-bit": DEF_UNK,
    },
    "update": {
        "captured-str": table_header("string", 21, ["gpt", "gpc", "gpc_rate"], (3, 2, 2), 5)
        + msg_sel(0x80) + UPD_STR,
        "stickiness": table_header("string", 32, ["server_id", "server_key"]) + msg_sel(0x80)
        + UPD_BE1 + UPD_BE3,
        "ipv4-rate": table_header("ip", 4, ["http_req_cnt", "http_req_rate"]) + msg_sel(0x80)
        + UPD_IP + UPD_IP,
        "ipv4-incr": table_header("ip", 4, ["http_req_cnt", "http_req_rate"]) + msg_sel(0x81)
        + UPD_IP_INCR + UPD_IP_INCR,
        "ipv4-timed": table_header("ip", 4, ["http_req_cnt", "http_req_rate"]) + msg_sel(0x85)
        + UPD_IP_TIMED,
        "binary-u64": table_header("binary", 8, ["server_id", "bytes_in_cnt"]) + msg_sel(0x86)
        + u32(1000) + b"abcdefgh" + varint(0xFFFFFFFF) + varint(1 << 40),
    },
    "hello": {
        # flags, chunking, time step, bytes
        "accept": bytes([0, 0xFF, 0]) + HELLO,
        "accept-then-frames": bytes([0, 0xFF, 0]) + HELLO + STREAM_IP,
        "accept-crlf-chunked": bytes([0, 3, 4]) + b"HAProxyS 2.0\r\nagg\r\nhap1 1 1\r\n",
        "refuse": bytes([2 | 4 << 2, 0xFF, 0]) + HELLO,
        "bad-version": bytes([0, 0xFF, 0]) + b"HAProxyS 3.0\nagg\nhap1 1 1\n",
        "no-space": bytes([0, 0xFF, 0]) + b"HAProxyS 2.1\nagg\nhap1\n",
        "slow": bytes([0, 5, 250]) + HELLO,
        "connect-ok": bytes([1, 0xFF, 0]) + b"200\n" + STREAM_BE,
        "connect-refused": bytes([1, 0xFF, 0]) + b"503\n",
    },
    "session": {
        # chunking, time step, flags, bytes
        "ipv4-echo": bytes([0xFF, 0, 1]) + STREAM_IP,
        "ipv4-echo-chunked": bytes([7, 40, 1]) + STREAM_IP,
        "stickiness-echo": bytes([0xFF, 0, 1]) + STREAM_BE,
        "captured-str-old-peer": bytes([0xFF, 0, 3]) + STREAM_STR,
        "switch": bytes([0xFF, 0, 1]) + STREAM_SWITCH,
        "resync-teach": bytes([0xFF, 0, 5]) + bytes([0, 0]) + STREAM_IP + bytes([0, 2]),
        "heartbeats-silence": bytes([2, 100, 0]) + bytes([0, 4]) * 8,
        "protocol-error": bytes([0xFF, 0, 1]) + STREAM_IP + bytes([0x0A, 0x80, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
    },
}

for target, seeds in SEEDS.items():
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, "seed-" + name), "wb") as f:
            f.write(data)
    print(f"{target}: {len(seeds)} seeds")
