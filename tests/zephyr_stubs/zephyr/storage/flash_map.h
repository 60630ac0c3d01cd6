/* Stand-in for Zephyr's include/zephyr/storage/flash_map.h (same struct and signatures). The
 * devicetree macros resolve a partition's node label through STUB_PARTITION_ID_<label>,
 * STUB_PARTITION_SIZE_<label> and STUB_PARTITION_EXISTS_<label> (undefined: 0 in #if, as
 * Zephyr's is for a missing node), expanding the label first as Zephyr's DT_NODELABEL does. */
#ifndef ZEPHYR_INCLUDE_STORAGE_FLASH_MAP_H_
#define ZEPHYR_INCLUDE_STORAGE_FLASH_MAP_H_
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <zephyr/devicetree.h>

struct device;

struct flash_area {
  uint8_t fa_id;
  uint8_t fa_device_id;
  uint16_t pad16;
  off_t fa_off;
  size_t fa_size;
  const struct device *fa_dev;
};

int flash_area_open(uint8_t id, const struct flash_area **fa);
void flash_area_close(const struct flash_area *fa);
int flash_area_read(const struct flash_area *fa, off_t off, void *dst, size_t len);
int flash_area_write(const struct flash_area *fa, off_t off, const void *src, size_t len);
int flash_area_erase(const struct flash_area *fa, off_t off, size_t len);
uint32_t flash_area_align(const struct flash_area *fa);
uint8_t flash_area_erased_val(const struct flash_area *fa);

#ifndef STUB_PARTITION_SIZE_storage_partition
#define STUB_PARTITION_SIZE_storage_partition (1024 * 1024)
#endif
#define STUB_PARTITION_ID_storage_partition 3
#ifndef STUB_NO_STORAGE_PARTITION /* -DSTUB_NO_STORAGE_PARTITION: a board without one */
#define STUB_PARTITION_EXISTS_storage_partition 1
#endif
#define FIXED_PARTITION_EXISTS(label) STUB_CAT(STUB_PARTITION_EXISTS_, label)
#define FIXED_PARTITION_ID(label) STUB_CAT(STUB_PARTITION_ID_, label)
#define FIXED_PARTITION_SIZE(label) STUB_CAT(STUB_PARTITION_SIZE_, label)

#endif
