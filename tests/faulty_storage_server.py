"""A storage server that misbehaves on purpose, for the fault-injection tests of the uart storage
backend (tests/test_storage_faults.py, tests/test_avr.py)."""
import dataclasses

from tvm_tinyseg.storage_server import BAD_CRC, OK, OP_WRITE, SYNC_RESPONSE, ClientGone, StorageServer, response_frame

LINE_NOISE = bytes([0x00, 0xFF, 0xA5, 0x13, 0x7E])
FALSE_FRAME_START = bytes([SYNC_RESPONSE, OK, 0x34, 0x12])  # "ok, 0x1234 bytes follow"


@dataclasses.dataclass
class Faults:
    """Misbehaviour; counts are frames, across all clients."""
    corrupt_reads: int = 0  # flip a bit in the payload of this many read responses (after the CRC)
    claim_bad_crc: int = 0  # answer this many requests with "bad crc" without serving them
    noisy_responses: int = 0  # precede this many responses with line noise (bytes other than the sync byte)
    misframed_responses: int = 0  # precede this many responses with a false sync byte and a bogus header
    hang_up_after: int = None  # close every connection once this many frames were served
    go_silent_after: int = None  # stop answering (connection left open) after this many frames
    flip_stored: int = 0  # keep this many writes with a bit flipped (well-formed frames: bit rot on the server)


class FaultyStorageServer(StorageServer):
    """A StorageServer answering with the ``faults`` (``Faults``) it is given."""

    def __init__(self, faults: Faults, **options):
        super().__init__(**options)
        self.faults = faults

    def _take_fault(self, name: str) -> bool:
        with self._lock:
            left = getattr(self.faults, name)
            if left > 0:
                setattr(self.faults, name, left - 1)
            return left > 0

    def respond(self, connection, op: int, offset: int, length: int, payload: bytes):
        frame_number = self.count("frames", 1)
        if self.faults.hang_up_after is not None and frame_number > self.faults.hang_up_after:
            raise ClientGone("hang-up fault")
        if self.faults.go_silent_after is not None and frame_number > self.faults.go_silent_after:
            return None
        if self._take_fault("claim_bad_crc"):
            return response_frame(BAD_CRC)
        status, data = connection.execute(op, offset, length, payload)
        if op == OP_WRITE and status == OK and length and self._take_fault("flip_stored"):
            connection.pool[offset] ^= 0x01
        frame = response_frame(status, data)
        if data and self._take_fault("corrupt_reads"):
            frame = frame[:4] + bytes([frame[4] ^ 0x01]) + frame[5:]
        if self._take_fault("noisy_responses"):
            frame = LINE_NOISE + frame
        if self._take_fault("misframed_responses"):
            frame = FALSE_FRAME_START + frame
        return frame
