/* Storage backend: block storage through read/write calls, here a host file standing for an SD
 * card or a flash file system. The file is $TINYSEG_STORAGE_FILE (default tinyseg_storage.bin). */
#include <stdio.h>
#include <stdlib.h>
#include "tinyseg_backend.h"

uint32_t tinyseg_storage_bytes_written;
uint32_t tinyseg_storage_bytes_read;
static FILE *storage_file;

static FILE *storage(void) {
  if (storage_file == NULL) {
    const char *path = getenv("TINYSEG_STORAGE_FILE");
    storage_file = fopen(path != NULL ? path : "tinyseg_storage.bin", "w+b");
  }
  return storage_file;
}

int tinyseg_storage_write(uint32_t offset, const void *src, uint32_t nbytes) {
  FILE *f = storage();
  if (f == NULL || tinyseg_fault(TINYSEG_FAULT_FAILED_WRITE) || fseek(f, (long)offset, SEEK_SET) != 0 ||
      fwrite(src, 1, nbytes, f) != nbytes || fflush(f) != 0) {
    return TINYSEG_ERR_STORAGE_WRITE;
  }
  tinyseg_storage_bytes_written += nbytes;
  return TINYSEG_OK;
}

int tinyseg_storage_read(uint32_t offset, void *dst, uint32_t nbytes) {
  FILE *f = storage();
  if (f == NULL || tinyseg_fault(TINYSEG_FAULT_FAILED_READ) || fseek(f, (long)offset, SEEK_SET) != 0) {
    return TINYSEG_ERR_STORAGE_READ;
  }
  size_t got = fread(dst, 1, nbytes, f);
  if (tinyseg_fault(TINYSEG_FAULT_SHORT_READ)) got--;
  if (got != nbytes) return TINYSEG_ERR_STORAGE_READ;
  if (tinyseg_fault(TINYSEG_FAULT_CORRUPT_READ)) ((uint8_t *)dst)[0] ^= 1u;
  tinyseg_storage_bytes_read += nbytes;
  return TINYSEG_OK;
}

uint8_t *tinyseg_storage_map(void) { return NULL; }
