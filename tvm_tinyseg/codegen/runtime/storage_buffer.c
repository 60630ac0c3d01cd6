/* Storage backend: a memory-mapped pool (external PSRAM / flash mapped into the address space).
 * On the host it is a static buffer; a board places the section in its external memory. */
#include <string.h>
#include "tinyseg_backend.h"

#ifndef TINYSEG_STORAGE_SECTION
#define TINYSEG_STORAGE_SECTION ".bss.tinyseg_storage"
#endif

static uint8_t storage_pool[TINYSEG_STORAGE_BYTES > 0 ? TINYSEG_STORAGE_BYTES : 1]
    __attribute__((aligned(16), section(TINYSEG_STORAGE_SECTION)));
uint32_t tinyseg_storage_bytes_written;
uint32_t tinyseg_storage_bytes_read;

int tinyseg_storage_write(uint32_t offset, const void *src, uint32_t nbytes) {
  if ((uint64_t)offset + nbytes > TINYSEG_STORAGE_BYTES || tinyseg_fault(TINYSEG_FAULT_FAILED_WRITE)) {
    return TINYSEG_ERR_STORAGE_WRITE;
  }
  memcpy(storage_pool + offset, src, nbytes);
  tinyseg_storage_bytes_written += nbytes;
  return TINYSEG_OK;
}

int tinyseg_storage_read(uint32_t offset, void *dst, uint32_t nbytes) {
  if ((uint64_t)offset + nbytes > TINYSEG_STORAGE_BYTES || tinyseg_fault(TINYSEG_FAULT_FAILED_READ)) {
    return TINYSEG_ERR_STORAGE_READ;
  }
  memcpy(dst, storage_pool + offset, nbytes);
  if (tinyseg_fault(TINYSEG_FAULT_CORRUPT_READ)) ((uint8_t *)dst)[0] ^= 1u;
  tinyseg_storage_bytes_read += nbytes;
  return TINYSEG_OK;
}

uint8_t *tinyseg_storage_map(void) { return storage_pool; }
