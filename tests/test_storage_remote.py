"""Remote ("uart") storage: the C client (storage_remote.c over link_socket.c on the host, over
CMSDK UART0 under QEMU) against the shipped server (tvm_tinyseg/storage_server.py), and the
server's robustness against malformed, oversize, garbage, slow and vanishing clients."""
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import MODELS, run_tinyseg, seeded_input, tflm_reference

from tvm_tinyseg.boards import host
from tvm_tinyseg.boards import qemu_cortex_m as qemu
from tvm_tinyseg.storage_server import (BAD_CRC, MALFORMED, MAX_PAYLOAD, NO_SESSION, OK, OUT_OF_RANGE, StorageServer,
                                        crc16, request_frame, response_frame)

RUNTIME = host.RUNTIME_DIR
TINYUNET_32 = os.path.join(MODELS, "tinyunet_32x32_c1.tflite")
TINYUNET_80x120 = os.path.join(MODELS, "tinyunet_80x120.tflite")


# --- the protocol's CRC ---------------------------------------------------------------------

def test_crc16_is_ccitt_false():
    assert crc16(b"123456789") == 0x29B1  # the catalogue's check value for CRC-16/CCITT-FALSE
    assert crc16(b"") == 0xFFFF


# --- end to end on the host -------------------------------------------------------------------

@pytest.mark.parametrize("model", [TINYUNET_32, pytest.param(TINYUNET_80x120, marks=pytest.mark.slow)],
                         ids=os.path.basename)
def test_uart_storage_matches_tflm_and_counts_the_bytes_moved(compiled_zoo, model):
    result, out_dir, exe = compiled_zoo.get(model, ram_budget=-1, storage="uart")
    report = result.memory_report
    assert report["spilled"], "the minimal budget must spill something"
    spec = result.io_spec["input"]
    for seed in (0, 1):
        x = seeded_input(spec["shape"], spec["dtype"], seed)
        stats = {}
        with StorageServer() as server:
            y = host.run(out_dir, x, exe, stats, storage_server=server)
        np.testing.assert_array_equal(y, tflm_reference(model, x))
        assert stats["status"] == 0
        assert stats["storage_written"] + stats["storage_read"] == report["moved_bytes"]
        assert server.stats["bytes_written"] == stats["storage_written"]
        assert server.stats["bytes_read"] == stats["storage_read"]
        assert server.stats["bad_crc"] == server.stats["malformed"] == 0


def test_uart_model_directory_carries_the_link_header(compiled_zoo):
    _, out_dir, _ = compiled_zoo.get(TINYUNET_32, ram_budget=-1, storage="uart")
    assert {"storage_remote.c", "tinyseg_link.h", "tinyseg_storage.h"} <= set(os.listdir(out_dir))


@pytest.mark.skipif(shutil.which("avr-gcc") is None, reason="avr-gcc not installed")
def test_remote_client_compiles_for_8bit_avr(compiled_zoo, tmp_path):
    """16-bit int: the client must be clean with fixed-width types only."""
    _, out_dir, _ = compiled_zoo.get(TINYUNET_32, ram_budget=-1, storage="uart")
    proc = subprocess.run(["avr-gcc", "-mmcu=atmega2560", "-std=c99", "-Os", "-Wall", "-Wextra", "-Werror",
                           "-c", "-I", out_dir, os.path.join(RUNTIME, "storage_remote.c"),
                           "-o", str(tmp_path / "storage_remote.o")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


needs_qemu = pytest.mark.skipif(not qemu.available(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")


@needs_qemu
def test_uart_storage_under_qemu_matches_tflm_and_the_host(compiled_zoo):
    """The firmware's UART0 reaches the server through QEMU's -serial tcp: the same output as the
    host build and TFLite Micro, and every spilled byte crosses the serial line."""
    result, out_dir, exe = compiled_zoo.get(TINYUNET_32, ram_budget=-1, storage="uart")
    spec = result.io_spec["input"]
    x = seeded_input(spec["shape"], spec["dtype"], 2)
    stats = {}
    with StorageServer() as server:
        y = qemu.run(out_dir, x, qemu.build(out_dir), stats, storage_server=server)
    np.testing.assert_array_equal(y, tflm_reference(TINYUNET_32, x))
    np.testing.assert_array_equal(y, host.run(out_dir, x, exe))
    assert stats["status"] == 0 and stats["exit_status"] == 0
    assert stats["storage_written"] + stats["storage_read"] == result.memory_report["moved_bytes"]
    assert (server.stats["bytes_written"], server.stats["bytes_read"]) == (stats["storage_written"],
                                                                         stats["storage_read"])


@pytest.mark.parametrize("platform", [pytest.param("host", marks=pytest.mark.slow),
                                      pytest.param("qemu", marks=[needs_qemu, pytest.mark.slow])])
def test_cli_runs_a_uart_model_with_its_own_server(tmp_path, platform):
    build = tmp_path / "build"
    proc = run_tinyseg("compile", TINYUNET_32, "-o", build, "--ram-budget", "min", "--storage", "uart")
    assert proc.returncode == 0, proc.stderr
    x = seeded_input([1, 32, 32, 1], "int8", 0)
    np.save(tmp_path / "x.npy", x)
    proc = run_tinyseg("run", build, "--platform", platform, "--input", tmp_path / "x.npy",
                       "--output", tmp_path / "y.npy")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), tflm_reference(TINYUNET_32, x))
    with open(build / "memory.json") as f:
        moved = json.load(f)["moved_bytes"]
    assert f"storage: {moved // 2} B written, {moved // 2} B read" in proc.stdout


# --- the server, frame by frame ---------------------------------------------------------------

class Client:
    """A raw protocol client over TCP, as a board behind QEMU's serial port would be."""

    def __init__(self, server_or_port, timeout=5.0):
        port = getattr(server_or_port, "port", server_or_port)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)

    def send(self, data: bytes):
        self.sock.sendall(data)

    def response(self):
        """(status, payload) of the next response, after checking its framing and CRC."""
        head = self._exactly(4)
        assert head[0] == 0x5A
        status, length = struct.unpack("<BH", head[1:])
        payload = self._exactly(length)
        (crc,) = struct.unpack("<H", self._exactly(2))
        assert crc == crc16(head[1:] + payload)
        return status, payload

    def call(self, op, offset=0, length=0, payload=b""):
        self.send(request_frame(op, offset, length, payload))
        return self.response()

    def open(self, size):
        return self.call(b"O", 0, 4, struct.pack("<I", size))

    def _exactly(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("server closed the connection")
            data += chunk
        return data

    def close(self):
        self.sock.close()


@pytest.fixture
def server():  # the test's clients are all this process: let it hold every connection
    with StorageServer(pool_limit=1 << 16, max_clients=4, max_clients_per_peer=4, frame_timeout=0.5) as s:
        yield s


def wait_for(predicate, seconds=3.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_write_then_read_back(server):
    c = Client(server)
    assert c.open(1000) == (OK, b"")
    data = bytes(range(200))
    assert c.call(b"W", 100, len(data), data) == (OK, b"")
    assert c.call(b"R", 100, len(data)) == (OK, data)
    assert c.call(b"R", 0, 4) == (OK, bytes(4))  # a fresh pool reads as zeros
    assert server.stats["bytes_written"] == 200 and server.stats["bytes_read"] == 204


def test_requests_before_open_are_refused(server):
    c = Client(server)
    assert c.call(b"R", 0, 4) == (NO_SESSION, b"")
    assert c.call(b"W", 0, 1, b"x") == (NO_SESSION, b"")


def test_out_of_range_and_pool_limit(server):
    c = Client(server)
    assert c.open(server.pool_limit + 1) == (OUT_OF_RANGE, b"")
    assert server.stats["refused_pools"] == 1
    assert c.open(64) == (OK, b"")
    assert c.call(b"W", 60, 8, bytes(8)) == (OUT_OF_RANGE, b"")
    assert c.call(b"R", 0xFFFFFFFF, 2) == (OUT_OF_RANGE, b"")
    assert c.call(b"R", 56, 8) == (OK, bytes(8))


def test_bad_crc_is_reported_and_the_connection_recovers(server):
    c = Client(server)
    assert c.open(64) == (OK, b"")
    frame = bytearray(request_frame(b"W", 0, 4, b"abcd"))
    frame[-1] ^= 0xFF
    c.send(bytes(frame))
    assert c.response() == (BAD_CRC, b"")
    assert c.call(b"R", 0, 4) == (OK, bytes(4))  # the corrupt write was not applied
    assert server.stats["bad_crc"] == 1


@pytest.mark.parametrize("frame", [
    request_frame(b"W", 0, MAX_PAYLOAD + 1, bytes(MAX_PAYLOAD + 1)),  # oversize payload
    request_frame(b"R", 0, 0xFFFF),  # oversize read
    request_frame(b"X", 0, 0),  # unknown op
], ids=["oversize-write", "oversize-read", "unknown-op"])
def test_malformed_frames_are_answered_and_skipped(server, frame):
    c = Client(server)
    assert c.open(64) == (OK, b"")
    c.send(frame)
    assert c.response() == (MALFORMED, b"")
    assert c.call(b"W", 0, 2, b"ok") == (OK, b"")
    assert c.call(b"R", 0, 2) == (OK, b"ok")


def test_open_with_a_bad_payload_is_malformed(server):
    c = Client(server)
    assert c.call(b"O", 0, 2, b"\x10\x00") == (MALFORMED, b"")


def test_garbage_before_a_frame_is_skipped(server):
    c = Client(server)
    c.send(bytes(range(0x10, 0x90)) + request_frame(b"O", 0, 4, struct.pack("<I", 16)))
    assert c.response() == (OK, b"")
    assert server.stats["garbage_bytes"] == 0x80


@pytest.mark.parametrize("seed", range(4))
def test_random_garbage_neither_crashes_nor_wedges_the_server(server, seed):
    """Random bytes (some of them sync bytes starting bogus frames): every answer is a well-formed
    error frame, and once the line is quiet a valid request is served."""
    rng = np.random.default_rng(seed)
    c = Client(server, timeout=3.0)
    assert c.open(64) == (OK, b"")
    c.send(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    c.sock.settimeout(1.5)  # > the frame deadline: every bogus frame has been answered or dropped
    answers, closed = [], False
    try:
        while True:
            answers.append(c.response())
    except (socket.timeout, TimeoutError):
        pass
    except ConnectionError:  # a bogus frame left unfinished: its deadline closed the connection
        closed = True
    assert all(status in (BAD_CRC, MALFORMED, OUT_OF_RANGE) and payload == b"" for status, payload in answers)
    c.sock.settimeout(3.0)
    if closed:
        c = Client(server)
        assert c.open(64) == (OK, b"")
    assert c.call(b"W", 0, 3, b"abc") == (OK, b"")
    assert c.call(b"R", 0, 3) == (OK, b"abc")


def test_connections_leave_no_threads_or_sockets_behind(server):
    def open_fds():
        return len(os.listdir("/proc/self/fd"))

    Client(server).open(16)  # warm up
    assert wait_for(lambda: server.active_clients == 0)
    threads, fds = threading.active_count(), open_fds()
    for i in range(20):
        c = Client(server)
        assert c.open(4096) == (OK, b"")
        c.send(request_frame(b"W", 0, 200, bytes(200))[:i * 10])  # vanish mid-frame, or between frames
        c.close()
    assert wait_for(lambda: server.active_clients == 0)
    assert wait_for(lambda: threading.active_count() == threads)
    assert open_fds() == fds


def test_two_clients_never_see_each_others_data(server):
    a, b = Client(server), Client(server)
    assert a.open(256) == (OK, b"") and b.open(256) == (OK, b"")
    assert a.call(b"W", 0, 5, b"alice") == (OK, b"")
    assert b.call(b"W", 0, 3, b"bob") == (OK, b"")
    assert a.call(b"R", 0, 5) == (OK, b"alice")
    assert b.call(b"R", 0, 5) == (OK, b"bob\0\0")
    a.close()
    c = Client(server)  # a new connection gets no session, let alone a's pool
    assert c.call(b"R", 0, 5) == (NO_SESSION, b"")


def test_vanishing_and_slow_clients_are_released(server):
    half = request_frame(b"W", 0, 200, bytes(200))[:50]
    vanishing = Client(server)
    vanishing.open(4096)
    vanishing.send(half)
    vanishing.close()
    slow = Client(server)
    slow.send(half)  # then nothing: the frame deadline (0.5 s) must cut it off
    assert wait_for(lambda: server.active_clients == 0)
    assert slow.sock.recv(1) == b""  # the server closed it
    assert Client(server).open(16) == (OK, b"")  # still serving


def test_clients_beyond_the_limit_are_turned_away(server):
    clients = [Client(server) for _ in range(server.max_clients)]
    assert all(c.open(16) == (OK, b"") for c in clients)
    extra = Client(server)
    assert extra.sock.recv(1) == b""
    assert server.stats["rejected_connections"] == 1
    clients[0].close()
    assert wait_for(lambda: server.active_clients < server.max_clients)
    assert Client(server).open(16) == (OK, b"")


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="peers are told apart through Linux's /proc")
def test_idle_sockets_of_one_process_do_not_lock_out_a_real_client(compiled_zoo):
    """One process opens as many connections as the server takes and sends nothing: it gets
    max_clients_per_peer of them, the C client of another process (the host runner) is served
    beside it and gives TFLite Micro's output, and the idle ones are dropped after idle_timeout."""
    _, out_dir, exe = compiled_zoo.get(TINYUNET_32, ram_budget=-1, storage="uart")
    x = seeded_input([1, 32, 32, 1], "int8", 0)
    with StorageServer(idle_timeout=3.0) as server:
        idle = [Client(server) for _ in range(server.max_clients)]
        assert wait_for(lambda: server.stats["rejected_per_peer"] == server.max_clients - server.max_clients_per_peer)
        assert server.active_clients == server.max_clients_per_peer
        stats = {}
        y = host.run(out_dir, x, exe, stats, storage_server=server)
        np.testing.assert_array_equal(y, tflm_reference(TINYUNET_32, x))
        assert stats["status"] == 0 and server.stats["bytes_read"] == stats["storage_read"] > 0
        assert wait_for(lambda: server.active_clients == 0, seconds=6.0)  # the idle ones, after 3 s
        assert all(c.sock.recv(1) == b"" for c in idle)


def test_the_idle_timeout_is_short_by_default():
    with StorageServer() as server:
        assert server.idle_timeout <= 60 and server.max_clients_per_peer < server.max_clients


@pytest.mark.parametrize("arguments, message", [
    (["--port", "99999"], "argument --port: 99999 is out of range (allowed: 0-65535)"),
    (["--port", "x"], "argument --port: 'x' is not an integer"),
    (["--max-clients", "-5"], "argument --max-clients: -5 is out of range (allowed: 1-1024)"),
    (["--max-clients-per-peer", "0"], "argument --max-clients-per-peer: 0 is out of range"),
    (["--max-clients", "2", "--max-clients-per-peer", "3"], "--max-clients-per-peer 3 is more than --max-clients 2"),
    (["--pool-limit", "0"], "argument --pool-limit: 0 is out of range (allowed: 1-4294967295)"),
    (["--pool-limit", str(1 << 32)], "argument --pool-limit: 4294967296 is out of range"),
    (["--idle-timeout", "0"], "argument --idle-timeout: 0 is out of range"),
    (["--idle-timeout", "nan"], "argument --idle-timeout: nan is out of range"),
    (["--frame-timeout", "-1"], "argument --frame-timeout: -1 is out of range"),
    (["--host", "no.such.host.invalid"], "cannot listen on no.such.host.invalid:0"),
])
def test_command_line_server_refuses_bad_options_in_one_line(arguments, message):
    proc = subprocess.run([sys.executable, "-m", "tvm_tinyseg.storage_server", *arguments], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr, proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("setting", [dict(port=99999), dict(max_clients=-5), dict(max_clients_per_peer=9),
                                     dict(pool_limit=0), dict(idle_timeout=float("nan"))])
def test_the_server_class_refuses_bad_settings(setting):
    with pytest.raises(ValueError, match="out of range"):
        StorageServer(**setting)


def test_stop_closes_every_connection():
    server = StorageServer().start()
    c = Client(server)
    assert c.open(16) == (OK, b"")
    server.stop()
    assert c.sock.recv(1) == b""
    assert server.active_clients == 0 and not server.running
    with pytest.raises(OSError):
        Client(server)


def test_listens_on_loopback_by_default():
    with StorageServer() as server:
        assert server._listener.getsockname()[0] == "127.0.0.1"


def test_command_line_server_serves_and_stops(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "tvm_tinyseg.storage_server", "--pool-limit", "1024"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "127.0.0.1:" in line, line
        c = Client(int(line.split("127.0.0.1:")[1].split()[0]))
        assert c.open(2048) == (OUT_OF_RANGE, b"")
        assert c.open(1024) == (OK, b"")
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    assert "'refused_pools': 1" in proc.stdout.read()


def test_frame_layouts():
    assert request_frame(b"W", 0x01020304, 2, b"hi")[:10] == bytes([0xA5, ord("W"), 4, 3, 2, 1, 2, 0]) + b"hi"
    frame = response_frame(OK, b"\x01\x02")
    assert frame[:6] == bytes([0x5A, 0, 2, 0, 1, 2])
    assert struct.unpack("<H", frame[6:])[0] == crc16(frame[1:6])
