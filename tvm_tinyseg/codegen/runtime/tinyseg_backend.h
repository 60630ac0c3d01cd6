/* Included by the storage backends (storage_buffer.c, storage_file.c, storage_semihost.c,
 * storage_remote.c) and never by generated code. Two build modes:
 *
 * TINYSEG_STORAGE_INTEGRITY: every 16-byte block of the pool gets a CRC-16, kept in RAM
 *   (TINYSEG_STORAGE_BYTES / 8 bytes), so data that comes back from the medium altered (a flipped
 *   bit, a device that reads back zeros, a server that keeps other bytes) makes a read return
 *   TINYSEG_ERR_STORAGE_CHECKSUM instead of a wrong output. On by default for 'file' and 'uart'
 *   storage: the generated tinyseg_model.h defines it unless the model was compiled with
 *   --no-integrity. The backend's functions become the medium under the checked ones defined
 *   here. Writes must start on a block (the storage planner aligns every stored tensor to 16 B)
 *   and zero-pad their last block, which no other live tensor shares (the pool is whole blocks);
 *   reads fetch whole blocks, so the byte counters grow. In-place reads cannot be checked:
 *   tinyseg_storage_map() returns NULL.
 *
 * -DTINYSEG_FAULT=<kind> [-DTINYSEG_FAULT_CALL=n]: fault injection for tests (local backends). The
 *   backend's n-th medium call of the fault's direction (default: the first) misbehaves as a failing
 *   medium would (TINYSEG_FAULT_* below); the backend's own checks must then catch it. */
#ifndef TINYSEG_BACKEND_H
#define TINYSEG_BACKEND_H
#include <stdint.h>
#include <string.h>

#include "tinyseg_model.h"
#include "tinyseg_storage.h"

#define TINYSEG_FAULT_FAILED_WRITE 1 /* the medium rejects a write */
#define TINYSEG_FAULT_FAILED_READ 2  /* the medium rejects a read */
#define TINYSEG_FAULT_SHORT_READ 3   /* the medium returns one byte fewer than asked */
#define TINYSEG_FAULT_CORRUPT_READ 4 /* a bit of the fetched data flips (bit rot, a bad bus) */

#ifdef TINYSEG_FAULT
#ifndef TINYSEG_FAULT_CALL
#define TINYSEG_FAULT_CALL 1
#endif
static uint32_t tinyseg_fault_calls;

/* Whether this medium call, one of the kind `kind` could hit, is the one to misbehave. */
static int tinyseg_fault(int kind) {
  return kind == TINYSEG_FAULT && ++tinyseg_fault_calls == (uint32_t)TINYSEG_FAULT_CALL;
}
#else
#define tinyseg_fault(kind) 0
#endif

#ifdef TINYSEG_STORAGE_INTEGRITY
#define TINYSEG_BLOCK_BYTES 16u
#define TINYSEG_BLOCKS (((uint32_t)TINYSEG_STORAGE_BYTES + TINYSEG_BLOCK_BYTES - 1u) / TINYSEG_BLOCK_BYTES)

int tinyseg_medium_write(uint32_t offset, const void *src, uint32_t nbytes);
int tinyseg_medium_read(uint32_t offset, void *dst, uint32_t nbytes);
uint8_t *tinyseg_medium_map(void);

static uint16_t tinyseg_block_crc[TINYSEG_BLOCKS > 0u ? TINYSEG_BLOCKS : 1u];

/* CRC-16/CCITT-FALSE of one block, four bits at a time: a 32-byte table instead of a loop per bit
 * (the check costs about a quarter of the instructions it would). */
static const uint16_t tinyseg_crc_nibble[16] = {
    0x0000u, 0x1021u, 0x2042u, 0x3063u, 0x4084u, 0x50A5u, 0x60C6u, 0x70E7u,
    0x8108u, 0x9129u, 0xA14Au, 0xB16Bu, 0xC18Cu, 0xD1ADu, 0xE1CEu, 0xF1EFu};

static uint16_t tinyseg_block_checksum(const uint8_t *p) {
  uint16_t crc = 0xFFFFu;
  for (uint8_t i = 0; i < TINYSEG_BLOCK_BYTES; i++) {
    crc = (uint16_t)((uint16_t)(crc << 4) ^ tinyseg_crc_nibble[((crc >> 12) ^ (p[i] >> 4)) & 0x0Fu]);
    crc = (uint16_t)((uint16_t)(crc << 4) ^ tinyseg_crc_nibble[((crc >> 12) ^ (p[i] & 0x0Fu)) & 0x0Fu]);
  }
  return crc;
}

int tinyseg_storage_write(uint32_t offset, const void *src, uint32_t nbytes) {
  const uint8_t *p = (const uint8_t *)src;
  uint32_t whole = nbytes - nbytes % TINYSEG_BLOCK_BYTES;
  uint8_t last[TINYSEG_BLOCK_BYTES] = {0};
  if (offset % TINYSEG_BLOCK_BYTES != 0u || (uint64_t)offset + whole > TINYSEG_STORAGE_BYTES) {
    return TINYSEG_ERR_STORAGE_WRITE;
  }
  if (whole > 0u) {
    int status = tinyseg_medium_write(offset, p, whole);
    if (status != TINYSEG_OK) return status;
  }
  if (whole < nbytes) {
    memcpy(last, p + whole, nbytes - whole);
    int status = tinyseg_medium_write(offset + whole, last, TINYSEG_BLOCK_BYTES);
    if (status != TINYSEG_OK) return status;
  }
  for (uint32_t done = 0; done < nbytes; done += TINYSEG_BLOCK_BYTES) {
    const uint8_t *block = done < whole ? p + done : last;
    tinyseg_block_crc[(offset + done) / TINYSEG_BLOCK_BYTES] = tinyseg_block_checksum(block);
  }
  return TINYSEG_OK;
}

/* Block-aligned runs of whole blocks go straight into dst in one medium call (one request to a
 * remote server) and are checked there; a partial block at either end goes through a copy. */
int tinyseg_storage_read(uint32_t offset, void *dst, uint32_t nbytes) {
  uint8_t *out = (uint8_t *)dst;
  uint8_t block[TINYSEG_BLOCK_BYTES];
  while (nbytes > 0u) {
    uint32_t index = offset / TINYSEG_BLOCK_BYTES;
    uint32_t skip = offset % TINYSEG_BLOCK_BYTES;
    uint32_t take = TINYSEG_BLOCK_BYTES - skip < nbytes ? TINYSEG_BLOCK_BYTES - skip : nbytes;
    uint8_t *fetched = block;
    if (skip == 0u && nbytes >= TINYSEG_BLOCK_BYTES) {
      take = nbytes - nbytes % TINYSEG_BLOCK_BYTES;
      fetched = out;
    }
    uint32_t blocks = fetched == out ? take / TINYSEG_BLOCK_BYTES : 1u;
    if (index >= TINYSEG_BLOCKS || blocks > TINYSEG_BLOCKS - index) return TINYSEG_ERR_STORAGE_READ;
    int status = tinyseg_medium_read(index * TINYSEG_BLOCK_BYTES, fetched, blocks * TINYSEG_BLOCK_BYTES);
    if (status != TINYSEG_OK) return status;
    for (uint32_t i = 0; i < blocks; i++) {
      if (tinyseg_block_checksum(fetched + i * TINYSEG_BLOCK_BYTES) != tinyseg_block_crc[index + i]) {
        return TINYSEG_ERR_STORAGE_CHECKSUM;
      }
    }
    if (fetched == block) memcpy(out, block + skip, take);
    out += take;
    offset += take;
    nbytes -= take;
  }
  return TINYSEG_OK;
}

uint8_t *tinyseg_storage_map(void) { return (uint8_t *)0; }

/* The backend below defines the medium. */
#define tinyseg_storage_write tinyseg_medium_write
#define tinyseg_storage_read tinyseg_medium_read
#define tinyseg_storage_map tinyseg_medium_map
#endif /* TINYSEG_STORAGE_INTEGRITY */

#endif /* TINYSEG_BACKEND_H */
