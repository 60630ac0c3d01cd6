/* Two compiled models in one program: `pair` (two inputs, two outputs, static arena) and `seg`
 * (built with -DSEG_NO_STATIC_ARENA: runs on this file's arena through seg_run_with_arena).
 * Files, in order: pair's inputs, seg's input, pair's outputs, seg's output (on the host from
 * argv, under QEMU through semihosting with fixed names). Exits with the first failing status,
 * or 100 + n when the n-th check of seg_run_with_arena's argument checks fails. */
#include <stddef.h>
#include "pair_model.h"
#include "seg_model.h"

static uint8_t seg_arena[SEG_ARENA_BYTES + SEG_ARENA_ALIGN] __attribute__((aligned(SEG_ARENA_ALIGN)));
static seg_input_t seg_in[SEG_INPUT_BYTES / sizeof(seg_input_t)];
static seg_output_t seg_out[SEG_OUTPUT_BYTES / sizeof(seg_output_t)];

#ifdef __arm__
#include "semihost.h"
static const char *const names[] = {"in0.bin", "in1.bin", "in2.bin", "out0.bin", "out1.bin", "out2.bin"};
static int transfer(int index, void *data, uint32_t n, int write) {
  int fd = sh_open(names[index], write ? SH_MODE_WB : SH_MODE_RB);
  if (fd < 0) return 1;
  uint32_t missed = write ? sh_write(fd, data, n) : sh_read(fd, data, n);
  return sh_close(fd) != 0 || missed != 0u;
}
int main(void) {
#else
#include <stdio.h>
static char **names;
static int transfer(int index, void *data, uint32_t n, int write) {
  FILE *f = fopen(names[index], write ? "wb" : "rb");
  if (f == NULL) return 1;
  size_t moved = write ? fwrite(data, 1, n, f) : fread(data, 1, n, f);
  return fclose(f) != 0 || moved != n;
}
int main(int argc, char **argv) {
  if (argc != 7) return 64;
  names = argv + 1;
#endif
  if (transfer(0, pair_input0_buffer(), PAIR_INPUT0_BYTES, 0) ||
      transfer(1, pair_input1_buffer(), PAIR_INPUT1_BYTES, 0) || transfer(2, seg_in, SEG_INPUT_BYTES, 0)) {
    return 66;
  }
  /* The arena checks: too small, misaligned, missing. */
  if (seg_run_with_arena(seg_arena, SEG_ARENA_BYTES - 1u, seg_in, seg_out) != SEG_ERR_ARENA_SIZE) return 101;
  if (seg_run_with_arena(seg_arena + 1, SEG_ARENA_BYTES, seg_in, seg_out) != SEG_ERR_ARENA_ALIGNMENT) return 102;
  if (seg_run_with_arena(NULL, SEG_ARENA_BYTES, seg_in, seg_out) != SEG_ERR_ARENA_SIZE) return 103;

  int status = pair_run(pair_input0_buffer(), pair_input1_buffer(), pair_output0_buffer(), pair_output1_buffer());
  if (status != PAIR_OK) return status;
  status = seg_run_with_arena(seg_arena, sizeof(seg_arena), seg_in, seg_out);
  if (status != SEG_OK) return status;
  if (transfer(3, pair_output0_buffer(), PAIR_OUTPUT0_BYTES, 1) ||
      transfer(4, pair_output1_buffer(), PAIR_OUTPUT1_BYTES, 1) || transfer(5, seg_out, SEG_OUTPUT_BYTES, 1)) {
    return 73;
  }
  return 0;
}
