/* Storage backend: the pool lives on a host server (tvm_tinyseg/storage_server.py) reached over a
 * byte link (tinyseg_link.h: a UART, or a TCP socket on the host), in CRC-checked frames.
 *
 *   request  (board -> host): 0xA5 | op u8 | offset u32 | length u16 | payload[length] | crc16
 *   response (host -> board): 0x5A | status u8 | length u16 | payload[length] | crc16
 *
 * Little-endian; crc16 is CRC-16/CCITT-FALSE over every byte after the sync byte. Ops: 'O' opens
 * a session (payload: the pool size, u32), 'W' writes the payload at offset, 'R' reads length
 * bytes (no request payload; the response carries them). At most 256 payload bytes per frame.
 * A frame whose CRC fails on either side is sent again, at most TINYSEG_REMOTE_RETRIES times.
 *
 * Line noise before a response's sync byte is skipped. Responses do not name their request, so a
 * retry is only safe while the byte stream is in step: a frame that failed its CRC but was
 * delimited as expected (no noise before it, a length consistent with the request) is retried;
 * anything else (an impossible length, a corrupt frame after noise, a timeout after which a late
 * answer may still arrive) leaves the link broken, and every later call fails with
 * TINYSEG_ERR_STORAGE_LINK until reset, rather than risk pairing a request with a stale answer.
 *
 * Written for 8-bit targets too (16-bit int): fixed-width types only, and responses stream
 * straight into the caller's buffer, so the backend needs no frame buffer. */
#include "tinyseg_backend.h" /* the CRC per block of storage, when TINYSEG_STORAGE_INTEGRITY is on */
#include "tinyseg_link.h"
#include "tinyseg_model.h"
#include "tinyseg_storage.h"

#ifndef TINYSEG_REMOTE_RETRIES
#define TINYSEG_REMOTE_RETRIES 3
#endif

#define SYNC_REQUEST 0xA5u
#define SYNC_RESPONSE 0x5Au
#define OP_OPEN 'O'
#define OP_WRITE 'W'
#define OP_READ 'R'
#define MAX_PAYLOAD 256u
#define MAX_NOISE (2u * MAX_PAYLOAD) /* bytes skipped before a sync byte at most */

#define STATUS_OK 0u
#define STATUS_BAD_CRC 1u

/* What one exchange came to: an answer (with its status), a well-delimited answer that failed
 * its CRC (safe to retry), or a dead or out-of-step link. */
#define EXCHANGE_ANSWERED 0
#define EXCHANGE_CORRUPT 1
#define EXCHANGE_LINK_BROKEN 2

uint32_t tinyseg_storage_bytes_written;
uint32_t tinyseg_storage_bytes_read;
static uint8_t session_open;
static uint8_t link_broken;

static uint16_t crc16(uint16_t crc, const uint8_t *p, uint16_t n) {
  while (n-- > 0u) {
    crc ^= (uint16_t)((uint16_t)*p++ << 8);
    for (uint8_t bit = 0; bit < 8u; bit++) {
      crc = (crc & 0x8000u) ? (uint16_t)((uint16_t)(crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
    }
  }
  return crc;
}

static void put_u16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v) {
  put_u16(p, (uint16_t)v);
  put_u16(p + 2, (uint16_t)(v >> 16));
}

static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | ((uint16_t)p[1] << 8)); }

static int send_request(uint8_t op, uint32_t offset, const uint8_t *payload, uint16_t length) {
  uint8_t head[8];
  uint8_t tail[2];
  uint16_t sent = op == OP_READ ? 0u : length;
  head[0] = SYNC_REQUEST;
  head[1] = op;
  put_u32(head + 2, offset);
  put_u16(head + 6, length);
  put_u16(tail, crc16(crc16(0xFFFFu, head + 1, 7u), payload, sent));
  if (tinyseg_link_send(head, sizeof(head)) != 0) return EXCHANGE_LINK_BROKEN;
  if (sent > 0u && tinyseg_link_send(payload, sent) != 0) return EXCHANGE_LINK_BROKEN;
  return tinyseg_link_send(tail, sizeof(tail)) != 0 ? EXCHANGE_LINK_BROKEN : EXCHANGE_ANSWERED;
}

/* Receives one response. Its payload is `wanted` bytes (into dst) when the status is ok, none
 * otherwise; a frame that says anything else is out of step with the requests. */
static int receive_response(uint8_t *dst, uint16_t wanted, uint8_t *status) {
  uint8_t head[3];
  uint8_t tail[2];
  uint8_t sync = 0;
  uint16_t noise = 0;
  for (;;) {
    if (tinyseg_link_recv(&sync, 1u) != 0) return EXCHANGE_LINK_BROKEN;
    if (sync == SYNC_RESPONSE) break;
    if (++noise > MAX_NOISE) return EXCHANGE_LINK_BROKEN;
  }
  if (tinyseg_link_recv(head, sizeof(head)) != 0) return EXCHANGE_LINK_BROKEN;
  uint16_t length = get_u16(head + 1);
  if (length != (head[0] == STATUS_OK ? wanted : 0u)) return EXCHANGE_LINK_BROKEN;
  if (length > 0u && tinyseg_link_recv(dst, length) != 0) return EXCHANGE_LINK_BROKEN;
  if (tinyseg_link_recv(tail, sizeof(tail)) != 0) return EXCHANGE_LINK_BROKEN;
  if (get_u16(tail) != crc16(crc16(0xFFFFu, head, sizeof(head)), dst, length)) {
    return noise == 0u ? EXCHANGE_CORRUPT : EXCHANGE_LINK_BROKEN;
  }
  *status = head[0];
  return EXCHANGE_ANSWERED;
}

/* One frame, sent again while either side sees a CRC error; a TINYSEG_* status. */
static int request(uint8_t op, uint32_t offset, const uint8_t *payload, uint16_t length, uint8_t *dst) {
  for (uint8_t attempt = 0; attempt <= TINYSEG_REMOTE_RETRIES && !link_broken; attempt++) {
    uint8_t status = STATUS_BAD_CRC;
    int result = send_request(op, offset, payload, length);
    if (result == EXCHANGE_ANSWERED) result = receive_response(dst, op == OP_READ ? length : 0u, &status);
    if (result == EXCHANGE_LINK_BROKEN) link_broken = 1;
    if (result == EXCHANGE_ANSWERED && status != STATUS_BAD_CRC) {
      return status == STATUS_OK ? TINYSEG_OK : TINYSEG_ERR_STORAGE_REFUSED;
    }
  }
  return link_broken ? TINYSEG_ERR_STORAGE_LINK : TINYSEG_ERR_STORAGE_CHECKSUM;
}

/* Opens the session (the server's zeroed pool of TINYSEG_STORAGE_BYTES) at the first call. */
static int open_session(void) {
  uint8_t size[4];
  if (session_open) return TINYSEG_OK;
  put_u32(size, (uint32_t)TINYSEG_STORAGE_BYTES);
  int status = request(OP_OPEN, 0u, size, sizeof(size), (uint8_t *)0);
  session_open = status == TINYSEG_OK;
  return status;
}

int tinyseg_storage_write(uint32_t offset, const void *src, uint32_t nbytes) {
  const uint8_t *p = (const uint8_t *)src;
  int status = open_session();
  while (status == TINYSEG_OK && nbytes > 0u) {
    uint16_t chunk = nbytes > MAX_PAYLOAD ? (uint16_t)MAX_PAYLOAD : (uint16_t)nbytes;
    status = request(OP_WRITE, offset, p, chunk, (uint8_t *)0);
    if (status == TINYSEG_OK) {
      tinyseg_storage_bytes_written += chunk;
      p += chunk;
      offset += chunk;
      nbytes -= chunk;
    }
  }
  return status;
}

int tinyseg_storage_read(uint32_t offset, void *dst, uint32_t nbytes) {
  uint8_t *p = (uint8_t *)dst;
  int status = open_session();
  while (status == TINYSEG_OK && nbytes > 0u) {
    uint16_t chunk = nbytes > MAX_PAYLOAD ? (uint16_t)MAX_PAYLOAD : (uint16_t)nbytes;
    status = request(OP_READ, offset, (const uint8_t *)0, chunk, p);
    if (status == TINYSEG_OK) {
      tinyseg_storage_bytes_read += chunk;
      p += chunk;
      offset += chunk;
      nbytes -= chunk;
    }
  }
  return status;
}

uint8_t *tinyseg_storage_map(void) { return (uint8_t *)0; }
