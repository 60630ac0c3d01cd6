/* The one interface between generated code and the storage that holds spilled tensors.
 * Each backend is one C file (storage_*.c); the generated code never knows which one it runs on.
 * Offsets and sizes are in bytes, within the model's storage pool (TINYSEG_STORAGE_BYTES). */
#ifndef TINYSEG_STORAGE_H
#define TINYSEG_STORAGE_H
#include <stdint.h>

#include "tinyseg_model.h" /* the status codes (TINYSEG_OK, TINYSEG_ERR_*) the calls return */

#ifdef __cplusplus
extern "C" {
#endif

int tinyseg_storage_write(uint32_t offset, const void *src, uint32_t nbytes);
int tinyseg_storage_read(uint32_t offset, void *dst, uint32_t nbytes);

/* Memory-mapped backends return the pool's base address; block and remote backends NULL. */
uint8_t *tinyseg_storage_map(void);

/* Bytes that crossed the interface since start-up (reads in place through the map not included). */
extern uint32_t tinyseg_storage_bytes_written;
extern uint32_t tinyseg_storage_bytes_read;

#ifdef __cplusplus
}
#endif
#endif /* TINYSEG_STORAGE_H */
