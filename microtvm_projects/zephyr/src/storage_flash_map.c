/* Storage backend for Zephyr: the storage pool is a fixed flash partition, accessed through the
 * flash map (CONFIG_FLASH_MAP). Its devicetree node label is TINYSEG_FLASH_PARTITION (CMake cache
 * variable of the same name; default storage_partition). Boards without one: the CMake option
 * TINYSEG_SIM_FLASH=ON adds a simulated flash holding one (devicetree overlay sim_flash.overlay).
 *
 * Flash is written once after an erase, so tinyseg_storage_begin() (called by main.c before each
 * inference) erases the partition, and every write first checks that its bytes are still erased:
 * a model whose pool reuses bytes within one inference gets TINYSEG_ERR_STORAGE_WRITE, never
 * silently wrong data. Pool offsets are multiples of 16, so a flash write block of up to 16 bytes
 * is never shared by two tensors; a tail shorter than one block is padded with the erased value. */
#include <string.h>
#include <zephyr/kernel.h>
#include <zephyr/storage/flash_map.h>

#include "tinyseg_backend.h" /* the CRC per block of storage, when TINYSEG_STORAGE_INTEGRITY is on */
#include "tinyseg_model.h"
#include "tinyseg_storage.h"

#ifndef TINYSEG_FLASH_PARTITION
#define TINYSEG_FLASH_PARTITION storage_partition
#endif
#define POOL_ALIGNMENT 16u /* offsets of the storage pool (the planner's alignment) */
#define CHECK_CHUNK 32u    /* bytes read at a time by the erased-check */

#if !FIXED_PARTITION_EXISTS(TINYSEG_FLASH_PARTITION)
#error "no flash partition TINYSEG_FLASH_PARTITION in the devicetree: set the CMake option TINYSEG_SIM_FLASH=ON (a simulated flash) or TINYSEG_FLASH_PARTITION=LABEL"
#define PARTITION_ID 0 /* only to keep the #error the one message */
#else
#define PARTITION_ID FIXED_PARTITION_ID(TINYSEG_FLASH_PARTITION)
BUILD_ASSERT(FIXED_PARTITION_SIZE(TINYSEG_FLASH_PARTITION) >= TINYSEG_STORAGE_BYTES,
             "the flash partition TINYSEG_FLASH_PARTITION is smaller than the storage pool (TINYSEG_STORAGE_BYTES)");
#endif

uint32_t tinyseg_storage_bytes_written;
uint32_t tinyseg_storage_bytes_read;
static const struct flash_area *area;
static uint32_t write_block;
static uint8_t erased_value;

/* Overrides main.c's weak default: called before each inference. */
int tinyseg_storage_begin(void) {
  if (area == NULL) {
    if (flash_area_open(PARTITION_ID, &area) != 0) {
      area = NULL;
      return TINYSEG_ERR_STORAGE_WRITE;
    }
    write_block = flash_area_align(area);
    erased_value = flash_area_erased_val(area);
  }
  if (write_block == 0u || write_block > POOL_ALIGNMENT || POOL_ALIGNMENT % write_block != 0u) {
    return TINYSEG_ERR_STORAGE_WRITE; /* tensors could share a write block */
  }
  return flash_area_erase(area, 0, area->fa_size) == 0 ? TINYSEG_OK : TINYSEG_ERR_STORAGE_WRITE;
}

/* Whether nbytes from offset still hold the erased value. */
static int is_erased(uint32_t offset, uint32_t nbytes) {
  uint8_t chunk[CHECK_CHUNK];
  while (nbytes > 0u) {
    uint32_t n = nbytes < CHECK_CHUNK ? nbytes : CHECK_CHUNK;
    if (flash_area_read(area, (off_t)offset, chunk, n) != 0) return 0;
    for (uint32_t i = 0; i < n; i++) {
      if (chunk[i] != erased_value) return 0;
    }
    offset += n;
    nbytes -= n;
  }
  return 1;
}

int tinyseg_storage_write(uint32_t offset, const void *src, uint32_t nbytes) {
  if (area == NULL || offset % write_block != 0u || (uint64_t)offset + nbytes > TINYSEG_STORAGE_BYTES ||
      !is_erased(offset, nbytes)) {
    return TINYSEG_ERR_STORAGE_WRITE;
  }
  uint32_t body = nbytes - nbytes % write_block;
  if (body > 0u && flash_area_write(area, (off_t)offset, src, body) != 0) return TINYSEG_ERR_STORAGE_WRITE;
  if (body < nbytes) {
    uint8_t tail[POOL_ALIGNMENT];
    memset(tail, erased_value, sizeof(tail));
    memcpy(tail, (const uint8_t *)src + body, nbytes - body);
    if (flash_area_write(area, (off_t)(offset + body), tail, write_block) != 0) return TINYSEG_ERR_STORAGE_WRITE;
  }
  tinyseg_storage_bytes_written += nbytes;
  return TINYSEG_OK;
}

int tinyseg_storage_read(uint32_t offset, void *dst, uint32_t nbytes) {
  if (area == NULL || (uint64_t)offset + nbytes > TINYSEG_STORAGE_BYTES ||
      flash_area_read(area, (off_t)offset, dst, nbytes) != 0) {
    return TINYSEG_ERR_STORAGE_READ;
  }
  tinyseg_storage_bytes_read += nbytes;
  return TINYSEG_OK;
}

uint8_t *tinyseg_storage_map(void) { return NULL; }
