"""The host end of the ``uart`` storage backend: a block-storage server for spilled tensors.

A board's runtime (codegen/runtime/storage_remote.c) talks to it over a serial line; QEMU's
``-serial tcp:127.0.0.1:PORT`` and the host build's socket link turn that into a TCP connection.
Each connection is one client with its own pool, so two clients never see each other's data.

Frames (little-endian; crc16 = CRC-16/CCITT-FALSE over every byte after the sync byte)::

    request  (board -> host): 0xA5 | op u8 | offset u32 | length u16 | payload[length] | crc16
    response (host -> board): 0x5A | status u8 | length u16 | payload[length] | crc16

``O`` opens a session: offset 0, payload = the pool size (u32); the pool is allocated zeroed,
and a size above the per-client limit is refused (status 2). ``W`` writes its payload at offset.
``R`` reads ``length`` bytes (no request payload; the response carries them). At most 256
payload bytes per frame. Statuses: 0 ok, 1 bad crc, 2 out of range, 3 malformed or oversize,
4 no session. Error responses carry no payload.

Robustness: it listens on 127.0.0.1 unless told otherwise; memory is bounded by ``pool_limit``
per client and ``max_clients`` clients; garbage before a sync byte is skipped; after a malformed
or corrupt frame the line is drained until quiet, then answered; a frame must complete within
``frame_timeout`` and a client idle for ``idle_timeout`` is disconnected. Every connection's
socket and pool are released when it ends.

Run it alone with ``python -m tvm_tinyseg.storage_server [--port N]``.
"""
import argparse
import binascii
import contextlib
import dataclasses
import socket
import struct
import sys
import threading
import time

SYNC_REQUEST = 0xA5
SYNC_RESPONSE = 0x5A
OP_OPEN, OP_WRITE, OP_READ = b"O"[0], b"W"[0], b"R"[0]
MAX_PAYLOAD = 256
HEADER = struct.Struct("<BIH")  # op, offset, length (after the sync byte)

OK, BAD_CRC, OUT_OF_RANGE, MALFORMED, NO_SESSION = range(5)

DEFAULT_POOL_LIMIT = 16 << 20
DEFAULT_MAX_CLIENTS = 8
QUIET_SECONDS = 0.05  # the line is drained after a bad frame until it has been silent this long
MAX_DRAIN_SECONDS = 2.0
LINE_NOISE = bytes([0x00, 0xFF, 0xA5, 0x13, 0x7E])
FALSE_FRAME_START = bytes([SYNC_RESPONSE, OK, 0x34, 0x12])  # "ok, 0x1234 bytes follow"


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor)."""
    return binascii.crc_hqx(data, crc)


def request_frame(op: bytes, offset: int, length: int, payload: bytes = b"") -> bytes:
    """A board's request, as storage_remote.c sends it (for tests and other clients)."""
    body = HEADER.pack(op[0], offset, length) + payload
    return bytes([SYNC_REQUEST]) + body + struct.pack("<H", crc16(body))


def response_frame(status: int, payload: bytes = b"") -> bytes:
    body = struct.pack("<BH", status, len(payload)) + payload
    return bytes([SYNC_RESPONSE]) + body + struct.pack("<H", crc16(body))


@dataclasses.dataclass
class Faults:
    """Misbehaviour for fault-injection tests; counts are frames, across all clients."""
    corrupt_reads: int = 0  # flip a bit in the payload of this many read responses (after the CRC)
    claim_bad_crc: int = 0  # answer this many requests with "bad crc" without serving them
    noisy_responses: int = 0  # precede this many responses with line noise (bytes other than the sync byte)
    misframed_responses: int = 0  # precede this many responses with a false sync byte and a bogus header
    hang_up_after: int = None  # close every connection once this many frames were served
    go_silent_after: int = None  # stop answering (connection left open) after this many frames
    flip_stored: int = 0  # keep this many writes with a bit flipped (well-formed frames: bit rot on the server)


class _ClientGone(Exception):
    """The client closed the connection, timed out or broke the frame deadline."""


class _Connection:
    """One client: its socket, its pool, and the frame loop."""

    def __init__(self, server: "StorageServer", sock: socket.socket):
        self.server, self.sock = server, sock
        self.pool = None
        self.buffer = bytearray()

    def _recv_into_buffer(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _ClientGone("frame deadline")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(4096)
        except (socket.timeout, OSError) as err:
            raise _ClientGone(str(err)) from None
        if not chunk:
            raise _ClientGone("closed")
        self.buffer += chunk

    def _take(self, n: int, deadline: float) -> bytes:
        while len(self.buffer) < n:
            self._recv_into_buffer(deadline)
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    def _next_sync(self) -> None:
        """Skips bytes until a request's sync byte; waits at most idle_timeout for one."""
        deadline = time.monotonic() + self.server.idle_timeout
        while True:
            at = self.buffer.find(SYNC_REQUEST)
            if at >= 0:
                self.server._count("garbage_bytes", at)
                del self.buffer[:at + 1]
                return
            self.server._count("garbage_bytes", len(self.buffer))
            self.buffer.clear()
            self._recv_into_buffer(deadline)

    def _drain(self) -> None:
        """Discards input until the line has been quiet for QUIET_SECONDS (resynchronisation)."""
        self.buffer.clear()
        stop = time.monotonic() + MAX_DRAIN_SECONDS
        while time.monotonic() < stop:
            self.sock.settimeout(QUIET_SECONDS)
            try:
                chunk = self.sock.recv(4096)
            except socket.timeout:
                return
            except OSError as err:
                raise _ClientGone(str(err)) from None
            if not chunk:
                raise _ClientGone("closed")

    def _send(self, frame: bytes) -> None:
        self.sock.settimeout(self.server.frame_timeout)
        try:
            self.sock.sendall(frame)
        except OSError as err:
            raise _ClientGone(str(err)) from None

    def serve(self) -> None:
        while not self.server._stopping.is_set():
            self._next_sync()
            deadline = time.monotonic() + self.server.frame_timeout
            head = self._take(HEADER.size, deadline)
            op, offset, length = HEADER.unpack(head)
            if op not in (OP_OPEN, OP_WRITE, OP_READ) or length > MAX_PAYLOAD:
                self.server._count("malformed", 1)
                self._drain()
                self._send(response_frame(MALFORMED))
                continue
            payload = self._take(0 if op == OP_READ else length, deadline)
            (crc,) = struct.unpack("<H", self._take(2, deadline))
            if crc != crc16(head + payload):
                self.server._count("bad_crc", 1)
                self._drain()
                self._send(response_frame(BAD_CRC))
                continue
            self._answer(op, offset, length, payload)

    def _answer(self, op: int, offset: int, length: int, payload: bytes) -> None:
        faults = self.server.faults
        frame_number = self.server._count("frames", 1)
        if faults.hang_up_after is not None and frame_number > faults.hang_up_after:
            raise _ClientGone("hang-up fault")
        if faults.go_silent_after is not None and frame_number > faults.go_silent_after:
            return
        if self.server._take_fault("claim_bad_crc"):
            self._send(response_frame(BAD_CRC))
            return
        status, data = self._execute(op, offset, length, payload)
        frame = response_frame(status, data)
        if data and self.server._take_fault("corrupt_reads"):
            frame = frame[:4] + bytes([frame[4] ^ 0x01]) + frame[5:]
        if self.server._take_fault("noisy_responses"):
            frame = LINE_NOISE + frame
        if self.server._take_fault("misframed_responses"):
            frame = FALSE_FRAME_START + frame
        self._send(frame)

    def _execute(self, op: int, offset: int, length: int, payload: bytes):
        """The status and payload answering a well-formed request."""
        if op == OP_OPEN:
            if offset != 0 or length != 4:
                return MALFORMED, b""
            (size,) = struct.unpack("<I", payload)
            if size > self.server.pool_limit:
                self.server._count("refused_pools", 1)
                return OUT_OF_RANGE, b""
            self.pool = None  # a reopened session starts afresh; free the old pool before allocating
            self.pool = bytearray(size)
            return OK, b""
        if self.pool is None:
            return NO_SESSION, b""
        if offset + length > len(self.pool):
            return OUT_OF_RANGE, b""
        if op == OP_WRITE:
            self.pool[offset:offset + length] = payload
            if length and self.server._take_fault("flip_stored"):
                self.pool[offset] ^= 0x01
            self.server._count("bytes_written", length)
            return OK, b""
        self.server._count("bytes_read", length)
        return OK, bytes(self.pool[offset:offset + length])


class StorageServer:
    """A storage server on ``host:port`` (port 0: an ephemeral port, see ``.port``), serving each
    connection in its own thread. Use as a context manager, or call start() and stop()."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, pool_limit: int = DEFAULT_POOL_LIMIT,
                 max_clients: int = DEFAULT_MAX_CLIENTS, frame_timeout: float = 5.0, idle_timeout: float = 600.0,
                 faults: Faults = None):
        self.host, self.pool_limit, self.max_clients = host, pool_limit, max_clients
        self.frame_timeout, self.idle_timeout = frame_timeout, idle_timeout
        self.faults = faults or Faults()
        self.stats = dict.fromkeys(("connections", "rejected_connections", "frames", "bytes_written", "bytes_read",
                                    "bad_crc", "malformed", "garbage_bytes", "refused_pools"), 0)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._clients = {}  # thread -> socket
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, port))
        self.port = self._listener.getsockname()[1]
        self._accepter = threading.Thread(target=self._accept_loop, name="storage-server", daemon=True)

    def start(self) -> "StorageServer":
        self._listener.listen(self.max_clients)
        self._listener.settimeout(0.1)  # lets the loop notice stop()
        self._accepter.start()
        return self

    def stop(self) -> None:
        """Stops accepting, disconnects every client and waits for their threads."""
        self._stopping.set()
        if self._accepter.is_alive():
            self._accepter.join()
        self._listener.close()
        with self._lock:
            clients = list(self._clients.items())
        for thread, sock in clients:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            thread.join()

    def __enter__(self) -> "StorageServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._accepter.is_alive()

    @property
    def active_clients(self) -> int:
        with self._lock:
            return len(self._clients)

    def _count(self, key: str, n: int) -> int:
        with self._lock:
            self.stats[key] += n
            return self.stats[key]

    def _take_fault(self, name: str) -> bool:
        with self._lock:
            left = getattr(self.faults, name)
            if left > 0:
                setattr(self.faults, name, left - 1)
            return left > 0

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                full = len(self._clients) >= self.max_clients
            if full:
                self._count("rejected_connections", 1)
                sock.close()
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(target=self._serve, args=(sock,), name="storage-client", daemon=True)
            with self._lock:
                self._clients[thread] = sock
                self.stats["connections"] += 1
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            _Connection(self, sock).serve()
        except _ClientGone:
            pass
        finally:
            sock.close()
            with self._lock:
                self._clients.pop(threading.current_thread(), None)


@contextlib.contextmanager
def serving(server: StorageServer = None):
    """A running server: ``server`` if given (started if need be, left running), else a new one on an
    ephemeral loopback port, stopped on exit."""
    if server is not None:
        if not server.running:
            server.start()
        yield server
        return
    with StorageServer() as fresh:
        yield fresh


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tvm_tinyseg.storage_server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: an ephemeral one, printed)")
    parser.add_argument("--pool-limit", type=int, default=DEFAULT_POOL_LIMIT, help="largest pool per client, bytes")
    parser.add_argument("--max-clients", type=int, default=DEFAULT_MAX_CLIENTS)
    args = parser.parse_args(argv)
    try:
        server = StorageServer(args.host, args.port, args.pool_limit, args.max_clients).start()
    except OSError as err:
        print(f"error: cannot listen on {args.host}:{args.port}: {err.strerror}", file=sys.stderr)
        return 1
    print(f"tinyseg storage server on {args.host}:{server.port} (pool limit {args.pool_limit} B per client)",
          flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        print(f"served: {server.stats}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
