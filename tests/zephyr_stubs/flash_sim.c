/* Host implementation of the stand-in flash map, to run the Zephyr project's sources on the
 * host: one flash partition with NOR semantics — a write must be aligned to
 * STUB_WRITE_BLOCK and may only clear bits (else -EIO, as a verifying driver would report), an
 * erase must cover whole STUB_ERASE_BLOCK sectors and sets them to 0xFF. */
#include <errno.h>
#include <string.h>
#include <zephyr/kernel.h>
#include <zephyr/storage/flash_map.h>

#ifndef STUB_WRITE_BLOCK
#define STUB_WRITE_BLOCK 8u
#endif
#define STUB_ERASE_BLOCK 4096u
#define PARTITION_SIZE ((size_t)STUB_PARTITION_SIZE_storage_partition)

static uint8_t flash[PARTITION_SIZE];
static const struct flash_area partition = {
    .fa_id = STUB_PARTITION_ID_storage_partition, .fa_off = 0, .fa_size = PARTITION_SIZE};

int flash_area_open(uint8_t id, const struct flash_area **fa) {
  if (id != partition.fa_id) return -ENOENT;
  *fa = &partition;
  return 0;
}

void flash_area_close(const struct flash_area *fa) { (void)fa; }

static int in_bounds(off_t off, size_t len) { return off >= 0 && (size_t)off + len <= PARTITION_SIZE; }

int flash_area_read(const struct flash_area *fa, off_t off, void *dst, size_t len) {
  if (fa != &partition || !in_bounds(off, len)) return -EINVAL;
  memcpy(dst, flash + off, len);
  return 0;
}

int flash_area_write(const struct flash_area *fa, off_t off, const void *src, size_t len) {
  if (fa != &partition || !in_bounds(off, len) || off % STUB_WRITE_BLOCK || len % STUB_WRITE_BLOCK) return -EINVAL;
  const uint8_t *bytes = src;
  for (size_t i = 0; i < len; i++) {
    if ((flash[off + i] & bytes[i]) != bytes[i]) return -EIO; /* would need an erase */
  }
  for (size_t i = 0; i < len; i++) flash[off + i] &= bytes[i];
  return 0;
}

int flash_area_erase(const struct flash_area *fa, off_t off, size_t len) {
  if (fa != &partition || !in_bounds(off, len) || off % STUB_ERASE_BLOCK || len % STUB_ERASE_BLOCK) return -EINVAL;
  memset(flash + off, 0xFF, len);
  return 0;
}

uint32_t flash_area_align(const struct flash_area *fa) {
  (void)fa;
  return STUB_WRITE_BLOCK;
}

uint8_t flash_area_erased_val(const struct flash_area *fa) {
  (void)fa;
  return 0xFF;
}
