/* Storage backend: block storage through ARM semihosting file calls — on a board under a debugger
 * or in QEMU (-semihosting-config enable=on) the pool is a file on the host, standing for an SD
 * card or a flash file system. The file is TINYSEG_STORAGE_FILE (default tinyseg_storage.bin),
 * relative to the debugger's / QEMU's working directory; it is created empty at the first call. */
#include <stdint.h>
#include "tinyseg_backend.h"

#ifndef TINYSEG_STORAGE_FILE
#define TINYSEG_STORAGE_FILE "tinyseg_storage.bin"
#endif

#define SEMIHOST_OPEN 0x01
#define SEMIHOST_WRITE 0x05
#define SEMIHOST_READ 0x06
#define SEMIHOST_SEEK 0x0A
#define SEMIHOST_MODE_WPLUSB 7 /* fopen "w+b" */

uint32_t tinyseg_storage_bytes_written;
uint32_t tinyseg_storage_bytes_read;
static int storage_handle = -1;

static int semihost_call(int op, uint32_t *block) {
  register int r0 __asm__("r0") = op;
  register uint32_t *r1 __asm__("r1") = block;
  __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

/* The open handle, positioned at offset; -1 on failure. */
static int storage_at(uint32_t offset) {
  if (storage_handle < 0) {
    static const char path[] = TINYSEG_STORAGE_FILE;
    uint32_t open_block[3] = {(uint32_t)(uintptr_t)path, SEMIHOST_MODE_WPLUSB, sizeof(path) - 1u};
    storage_handle = semihost_call(SEMIHOST_OPEN, open_block);
    if (storage_handle < 0) return -1;
  }
  uint32_t seek_block[2] = {(uint32_t)storage_handle, offset};
  return semihost_call(SEMIHOST_SEEK, seek_block) == 0 ? storage_handle : -1;
}

int tinyseg_storage_write(uint32_t offset, const void *src, uint32_t nbytes) {
  int fd = storage_at(offset);
  if (fd < 0 || tinyseg_fault(TINYSEG_FAULT_FAILED_WRITE)) return TINYSEG_ERR_STORAGE_WRITE;
  uint32_t block[3] = {(uint32_t)fd, (uint32_t)(uintptr_t)src, nbytes};
  if (semihost_call(SEMIHOST_WRITE, block) != 0) return TINYSEG_ERR_STORAGE_WRITE; /* bytes not written */
  tinyseg_storage_bytes_written += nbytes;
  return TINYSEG_OK;
}

int tinyseg_storage_read(uint32_t offset, void *dst, uint32_t nbytes) {
  int fd = storage_at(offset);
  if (fd < 0 || tinyseg_fault(TINYSEG_FAULT_FAILED_READ)) return TINYSEG_ERR_STORAGE_READ;
  uint32_t block[3] = {(uint32_t)fd, (uint32_t)(uintptr_t)dst, nbytes};
  int not_read = semihost_call(SEMIHOST_READ, block);
  if (tinyseg_fault(TINYSEG_FAULT_SHORT_READ)) not_read++;
  if (not_read != 0) return TINYSEG_ERR_STORAGE_READ;
  if (tinyseg_fault(TINYSEG_FAULT_CORRUPT_READ)) ((uint8_t *)dst)[0] ^= 1u;
  tinyseg_storage_bytes_read += nbytes;
  return TINYSEG_OK;
}

uint8_t *tinyseg_storage_map(void) { return (uint8_t *)0; }
