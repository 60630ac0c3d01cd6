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

Fairness: one peer — the process at the other end of a loopback connection (found through
/proc on Linux), else the remote address — holds at most ``max_clients_per_peer`` connections,
so a process holding idle sockets cannot take every slot; the idle timeout frees the slots it has.

Run it alone with ``python -m tvm_tinyseg.storage_server [--port N]`` (``--help``: its options).
"""
import argparse
import binascii
import contextlib
import os
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
MAX_POOL_LIMIT = 0xFFFFFFFF  # the pool size is a u32 in the open frame
DEFAULT_MAX_CLIENTS = 8
MAX_CLIENTS = 1024  # a thread each
DEFAULT_MAX_CLIENTS_PER_PEER = 2  # a board (a QEMU or runner process, a serial bridge) needs one
DEFAULT_FRAME_TIMEOUT = 5.0
DEFAULT_IDLE_TIMEOUT = 30.0  # between frames, e.g. while the board computes the kernels between spills
MAX_TIMEOUT = 86400  # seconds
QUIET_SECONDS = 0.05  # the line is drained after a bad frame until it has been silent this long
MAX_DRAIN_SECONDS = 2.0


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


class ClientGone(Exception):
    """The client closed the connection, timed out or broke the frame deadline (raised inside a
    connection's thread, it ends that connection)."""


class _Connection:
    """One client: its socket, its pool, and the frame loop."""

    def __init__(self, server: "StorageServer", sock: socket.socket):
        self.server, self.sock = server, sock
        self.pool = None
        self.buffer = bytearray()

    def _recv_into_buffer(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ClientGone("frame deadline")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(4096)
        except (socket.timeout, OSError) as err:
            raise ClientGone(str(err)) from None
        if not chunk:
            raise ClientGone("closed")
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
                self.server.count("garbage_bytes", at)
                del self.buffer[:at + 1]
                return
            self.server.count("garbage_bytes", len(self.buffer))
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
                raise ClientGone(str(err)) from None
            if not chunk:
                raise ClientGone("closed")

    def _send(self, frame: bytes) -> None:
        self.sock.settimeout(self.server.frame_timeout)
        try:
            self.sock.sendall(frame)
        except OSError as err:
            raise ClientGone(str(err)) from None

    def serve(self) -> None:
        while not self.server._stopping.is_set():
            self._next_sync()
            deadline = time.monotonic() + self.server.frame_timeout
            head = self._take(HEADER.size, deadline)
            op, offset, length = HEADER.unpack(head)
            if op not in (OP_OPEN, OP_WRITE, OP_READ) or length > MAX_PAYLOAD:
                self.server.count("malformed", 1)
                self._drain()
                self._send(response_frame(MALFORMED))
                continue
            payload = self._take(0 if op == OP_READ else length, deadline)
            (crc,) = struct.unpack("<H", self._take(2, deadline))
            if crc != crc16(head + payload):
                self.server.count("bad_crc", 1)
                self._drain()
                self._send(response_frame(BAD_CRC))
                continue
            self._answer(op, offset, length, payload)

    def _answer(self, op: int, offset: int, length: int, payload: bytes) -> None:
        frame = self.server.respond(self, op, offset, length, payload)
        if frame is not None:
            self._send(frame)

    def execute(self, op: int, offset: int, length: int, payload: bytes):
        """The status and payload answering a well-formed request."""
        if op == OP_OPEN:
            if offset != 0 or length != 4:
                return MALFORMED, b""
            (size,) = struct.unpack("<I", payload)
            if size > self.server.pool_limit:
                self.server.count("refused_pools", 1)
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
            self.server.count("bytes_written", length)
            return OK, b""
        self.server.count("bytes_read", length)
        return OK, bytes(self.pool[offset:offset + length])


def check_settings(port: int, pool_limit: int, max_clients: int, max_clients_per_peer: int, frame_timeout: float,
                   idle_timeout: float) -> None:
    """ValueError naming the first setting out of its range."""
    for name, value, low, high in (("port", port, 0, 65535), ("pool limit", pool_limit, 1, MAX_POOL_LIMIT),
                                   ("max clients", max_clients, 1, MAX_CLIENTS),
                                   ("max clients per peer", max_clients_per_peer, 1, max_clients),
                                   ("frame timeout", frame_timeout, 0.001, MAX_TIMEOUT),
                                   ("idle timeout", idle_timeout, 0.001, MAX_TIMEOUT)):
        if not low <= value <= high:  # also refuses NaN
            raise ValueError(f"{name} {value} is out of range (allowed: {low}-{high})")


def _proc_net_address(text: str):
    """('127.0.0.1', port) from /proc/net/tcp's '0100007F:1F90' (the address in host byte order)."""
    address, port = text.split(":")
    return socket.inet_ntoa(int(address, 16).to_bytes(4, sys.byteorder)), int(port, 16)


def _process_of(client: tuple, server: tuple):
    """The id of the local process holding the client end (``client`` -> ``server``) of a TCP
    connection, or None when /proc does not say (not Linux, or not allowed to look)."""
    try:
        with open("/proc/net/tcp") as f:
            rows = [line.split() for line in f.readlines()[1:]]
    except OSError:
        return None
    inodes = {row[9] for row in rows if len(row) > 9 and _proc_net_address(row[1]) == client
              and _proc_net_address(row[2]) == server}
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in wanted for fd in os.listdir(f"/proc/{pid}/fd")):
                return int(pid)
        except OSError:  # gone, or not ours to read
            continue
    return None


def peer_of(sock: socket.socket):
    """Who is connecting, for the per-peer limit: ``('process', pid)`` for a loopback connection whose
    process /proc names, ``('host', address)`` for a remote one; None if it cannot be told."""
    address, port = sock.getpeername()[:2]
    if not address.startswith("127."):
        return "host", address
    pid = _process_of((address, port), sock.getsockname()[:2])
    return None if pid is None else ("process", pid)


class StorageServer:
    """A storage server on ``host:port`` (port 0: an ephemeral port, see ``.port``), serving each
    connection in its own thread. Use as a context manager, or call start() and stop()."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, pool_limit: int = DEFAULT_POOL_LIMIT,
                 max_clients: int = DEFAULT_MAX_CLIENTS, frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                 max_clients_per_peer: int = DEFAULT_MAX_CLIENTS_PER_PEER):
        check_settings(port, pool_limit, max_clients, max_clients_per_peer, frame_timeout, idle_timeout)
        self.host, self.pool_limit, self.max_clients = host, pool_limit, max_clients
        self.max_clients_per_peer = max_clients_per_peer
        self.frame_timeout, self.idle_timeout = frame_timeout, idle_timeout
        self.stats = dict.fromkeys(("connections", "rejected_connections", "rejected_per_peer", "frames",
                                    "bytes_written", "bytes_read", "bad_crc", "malformed", "garbage_bytes",
                                    "refused_pools"), 0)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._clients = {}  # thread -> socket
        self._peers = {}  # thread -> peer_of(its socket)
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

    def count(self, key: str, n: int) -> int:
        """Adds ``n`` to ``stats[key]``; returns the new value."""
        with self._lock:
            self.stats[key] += n
            return self.stats[key]

    def respond(self, connection, op: int, offset: int, length: int, payload: bytes):
        """The response frame to a well-formed request on ``connection`` (None: leave it unanswered;
        raise ClientGone to hang up). Fault-injecting test servers override it."""
        self.count("frames", 1)
        return response_frame(*connection.execute(op, offset, length, payload))

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                peer = peer_of(sock)
            except OSError:  # gone already
                sock.close()
                continue
            with self._lock:
                full = len(self._clients) >= self.max_clients
                peer_full = peer is not None and \
                    sum(p == peer for p in self._peers.values()) >= self.max_clients_per_peer
            if full or peer_full:
                self.count("rejected_connections" if full else "rejected_per_peer", 1)
                sock.close()
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(target=self._serve, args=(sock,), name="storage-client", daemon=True)
            with self._lock:
                self._clients[thread] = sock
                self._peers[thread] = peer
                self.stats["connections"] += 1
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            _Connection(self, sock).serve()
        except ClientGone:
            pass
        finally:
            sock.close()
            with self._lock:
                self._clients.pop(threading.current_thread(), None)
                self._peers.pop(threading.current_thread(), None)


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


class _Parser(argparse.ArgumentParser):
    """A usage error in one line, status 1 (as the ``tinyseg`` command)."""

    def error(self, message):
        self.exit(1, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _ranged(kind, low, high):
    """An argparse type: ``kind`` (int or float) within [low, high]."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") \
                from None
        if not low <= value <= high:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"{text} is out of range (allowed: {low}-{high})")
        return value
    return parse


def main(argv=None) -> int:
    parser = _Parser(prog="python -m tvm_tinyseg.storage_server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=_ranged(int, 0, 65535), default=0,
                        help="TCP port (default: an ephemeral one, printed)")
    parser.add_argument("--pool-limit", type=_ranged(int, 1, MAX_POOL_LIMIT), default=DEFAULT_POOL_LIMIT,
                        help=f"largest pool per client, bytes (default {DEFAULT_POOL_LIMIT})")
    parser.add_argument("--max-clients", type=_ranged(int, 1, MAX_CLIENTS), default=DEFAULT_MAX_CLIENTS,
                        help=f"connections served at once (default {DEFAULT_MAX_CLIENTS})")
    parser.add_argument("--max-clients-per-peer", type=_ranged(int, 1, MAX_CLIENTS),
                        default=DEFAULT_MAX_CLIENTS_PER_PEER,
                        help="connections one peer (a local process, or a remote address) may hold "
                             f"(default {DEFAULT_MAX_CLIENTS_PER_PEER})")
    parser.add_argument("--idle-timeout", type=_ranged(float, 0.001, MAX_TIMEOUT), default=DEFAULT_IDLE_TIMEOUT,
                        metavar="SECONDS", help="disconnect a client silent this long between frames "
                                                f"(default {DEFAULT_IDLE_TIMEOUT:g})")
    parser.add_argument("--frame-timeout", type=_ranged(float, 0.001, MAX_TIMEOUT), default=DEFAULT_FRAME_TIMEOUT,
                        metavar="SECONDS",
                        help=f"time to complete a frame once begun (default {DEFAULT_FRAME_TIMEOUT:g})")
    args = parser.parse_args(argv)
    if args.max_clients_per_peer > args.max_clients:
        parser.error(f"--max-clients-per-peer {args.max_clients_per_peer} is more than --max-clients "
                     f"{args.max_clients}")
    try:
        server = StorageServer(args.host, args.port, args.pool_limit, args.max_clients, args.frame_timeout,
                               args.idle_timeout, max_clients_per_peer=args.max_clients_per_peer).start()
    except OSError as err:
        print(f"{parser.prog}: error: cannot listen on {args.host}:{args.port}: {err.strerror or err}",
              file=sys.stderr)
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
