/* The one interface between generated code and the storage that holds spilled tensors.
 * Each backend is one C file (storage_*.c); the generated code never knows which one it runs on.
 * Offsets and sizes are in bytes, within the model's storage pool (TINYSEG_STORAGE_BYTES). */
#ifndef TINYSEG_STORAGE_H
#define TINYSEG_STORAGE_H
#include <stdint.h>

/* Return codes of the storage calls, and of tinyseg_run(). */
#define TINYSEG_OK 0
#define TINYSEG_ERR_STORAGE_WRITE 1 /* a spill could not be written */
#define TINYSEG_ERR_STORAGE_READ 2  /* a fetch failed or returned fewer bytes */
#define TINYSEG_ERR_STORAGE_MAP 3   /* the model reads storage in place but the backend is not memory-mapped */
#define TINYSEG_ERR_STORAGE_LINK 4     /* remote storage: the link failed or the server did not answer in time */
#define TINYSEG_ERR_STORAGE_CHECKSUM 5 /* remote storage: frames kept failing their CRC after the retries */
#define TINYSEG_ERR_STORAGE_REFUSED 6  /* remote storage: the server refused (out of range, no session, too big) */
/* Debug builds (-DTINYSEG_DEBUG_CANARIES) only: a step wrote outside its output. */
#define TINYSEG_ERR_ARENA_CANARY 16      /* the guard bytes before or after the arena changed */
#define TINYSEG_ERR_BUFFER_CLOBBERED 17  /* a buffer live across the step (not its output) changed */

int tinyseg_storage_write(uint32_t offset, const void *src, uint32_t nbytes);
int tinyseg_storage_read(uint32_t offset, void *dst, uint32_t nbytes);

/* Memory-mapped backends return the pool's base address; block and remote backends NULL. */
uint8_t *tinyseg_storage_map(void);

/* Bytes that crossed the interface since start-up (reads in place through the map not included). */
extern uint32_t tinyseg_storage_bytes_written;
extern uint32_t tinyseg_storage_bytes_read;

#endif /* TINYSEG_STORAGE_H */
