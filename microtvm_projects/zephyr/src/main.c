/* Zephyr application for a model compiled by tinyseg: one inference on a fixed input, then the
 * result on the console.
 *
 * The input is a reproducible pseudo-random byte pattern (xorshift32 from TINYSEG_INPUT_SEED, one
 * byte per step: the state's top byte), so the printed FNV-1a checksum of the output can be
 * compared with a host or TFLite Micro run on the same bytes. Replace fill_input() with a camera
 * or sensor read.
 *
 * Console: "tinyseg-stats: status=S storage_written=W storage_read=R output_fnv1a=H time_ms=T". Under
 * QEMU (CONFIG_QEMU_TARGET) the board is then reset, which ends QEMU (run with -no-reboot, as
 * CMakeLists.txt asks). */
#include <zephyr/kernel.h>
#include <zephyr/sys/printk.h>
#if defined(CONFIG_QEMU_TARGET) && defined(CONFIG_REBOOT)
#include <zephyr/sys/reboot.h>
#define TINYSEG_EXIT_QEMU 1
#endif

#include "tinyseg_model.h"
#include "tinyseg_storage.h"

#ifndef TINYSEG_INPUT_SEED
#define TINYSEG_INPUT_SEED 1u
#endif

#define FNV1A_OFFSET 2166136261u
#define FNV1A_PRIME 16777619u

/* Backends with per-inference set-up (flash: erase the partition) override this. */
__attribute__((weak)) int tinyseg_storage_begin(void) { return TINYSEG_OK; }

static void fill_input(uint8_t *input, uint32_t nbytes) {
  uint32_t state = TINYSEG_INPUT_SEED;
  for (uint32_t i = 0; i < nbytes; i++) {
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    input[i] = (uint8_t)(state >> 24);
  }
}

static uint32_t fnv1a(const uint8_t *bytes, uint32_t nbytes) {
  uint32_t hash = FNV1A_OFFSET;
  for (uint32_t i = 0; i < nbytes; i++) {
    hash = (hash ^ bytes[i]) * FNV1A_PRIME;
  }
  return hash;
}

int main(void) {
  fill_input((uint8_t *)tinyseg_input_buffer(), TINYSEG_INPUT_BYTES);
  uint32_t start = k_uptime_get_32();
  int status = tinyseg_storage_begin();
  if (status == TINYSEG_OK) {
    status = tinyseg_run(tinyseg_input_buffer(), tinyseg_output_buffer());
  }
  uint32_t elapsed = k_uptime_get_32() - start;
  uint32_t hash = fnv1a((const uint8_t *)tinyseg_output_buffer(), TINYSEG_OUTPUT_BYTES);
  printk("tinyseg-stats: status=%d storage_written=%lu storage_read=%lu output_fnv1a=%lu time_ms=%lu\n", status,
         (unsigned long)tinyseg_storage_bytes_written, (unsigned long)tinyseg_storage_bytes_read,
         (unsigned long)hash, (unsigned long)elapsed);
#ifdef TINYSEG_EXIT_QEMU
  sys_reboot(SYS_REBOOT_COLD);
#endif
  return status;
}
