/* Host harness for a generated model: raw input bytes in, raw output bytes out, one file per
 * tensor in model order. usage: tinyseg_host IN0.bin [IN1.bin ...] OUT0.bin [OUT1.bin ...]
 * With TINYSEG_TIMING_RUNS=N in the environment it runs the model N more times and prints each
 * run's wall time ("tinyseg-times-ns: T1 T2 ..."). */
#define _POSIX_C_SOURCE 199309L /* clock_gettime */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "tinyseg_model.h"
#include "tinyseg_storage.h"

static const uint32_t input_bytes[TINYSEG_NUM_INPUTS] = TINYSEG_INPUT_SIZES;
static const uint32_t output_bytes[TINYSEG_NUM_OUTPUTS] = TINYSEG_OUTPUT_SIZES;

int main(int argc, char **argv) {
  const void *inputs[TINYSEG_NUM_INPUTS];
  void *outputs[TINYSEG_NUM_OUTPUTS];
  if (argc != 1 + TINYSEG_NUM_INPUTS + TINYSEG_NUM_OUTPUTS) {
    fprintf(stderr, "usage: %s %d input files, then %d output files\n", argv[0], TINYSEG_NUM_INPUTS,
            TINYSEG_NUM_OUTPUTS);
    return 64;
  }
  for (int i = 0; i < TINYSEG_NUM_INPUTS; ++i) {
    void *input = malloc(input_bytes[i]);
    FILE *f = fopen(argv[1 + i], "rb");
    if (input == NULL || f == NULL || fread(input, 1, input_bytes[i], f) != input_bytes[i]) {
      fprintf(stderr, "%s: cannot read %u input bytes\n", argv[1 + i], (unsigned)input_bytes[i]);
      return 66;
    }
    fclose(f);
    inputs[i] = input;
  }
  for (int i = 0; i < TINYSEG_NUM_OUTPUTS; ++i) {
    outputs[i] = malloc(output_bytes[i]);
    if (outputs[i] == NULL) return 71;
  }
  int status = tinyseg_invoke(inputs, outputs);
  fprintf(stderr, "tinyseg-stats: status=%d storage_written=%lu storage_read=%lu\n", status,
          (unsigned long)tinyseg_storage_bytes_written, (unsigned long)tinyseg_storage_bytes_read);
  const char *timing_runs = getenv("TINYSEG_TIMING_RUNS");
  if (status == TINYSEG_OK && timing_runs != NULL) {
    fprintf(stderr, "tinyseg-times-ns:");
    for (int run = atoi(timing_runs); run > 0 && status == TINYSEG_OK; --run) {
      struct timespec start, end;
      clock_gettime(CLOCK_MONOTONIC, &start);
      status = tinyseg_invoke(inputs, outputs);
      clock_gettime(CLOCK_MONOTONIC, &end);
      fprintf(stderr, " %lld", (long long)(end.tv_sec - start.tv_sec) * 1000000000LL + (end.tv_nsec - start.tv_nsec));
    }
    fprintf(stderr, "\n");
  }
  if (status != TINYSEG_OK) {
    fprintf(stderr, "tinyseg_run failed with status %d\n", status);
    return 70;
  }
  for (int i = 0; i < TINYSEG_NUM_OUTPUTS; ++i) {
    FILE *f = fopen(argv[1 + TINYSEG_NUM_INPUTS + i], "wb");
    if (f == NULL || fwrite(outputs[i], 1, output_bytes[i], f) != output_bytes[i] || fclose(f) != 0) {
      fprintf(stderr, "%s: cannot write the output\n", argv[1 + TINYSEG_NUM_INPUTS + i]);
      return 73;
    }
    free(outputs[i]);
  }
  for (int i = 0; i < TINYSEG_NUM_INPUTS; ++i) free((void *)inputs[i]);
  return 0;
}
