/* QEMU TCG plugin: counts the guest instructions the firmware executes and writes
 * "instructions=N" to the file given as out=PATH (else to QEMU's log).
 *
 *   cc -O2 -shared -fPIC -fvisibility=hidden -o libtinyseg_insncount.so tinyseg_insncount.c
 *   qemu-system-arm ... -plugin ./libtinyseg_insncount.so,out=instructions.txt
 *
 * Each translated block adds its instruction count inline when it starts executing, which costs
 * next to nothing. A block left early by an exception still counts whole (a handful of
 * instructions per fault; the firmware takes none in a normal run).
 *
 * QEMU ships no header for the plugin API in Debian's packages, so the few declarations used are
 * written here; they follow QEMU's include/qemu/qemu-plugin.h (API version 1, QEMU 7.x/8.x). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORTED __attribute__((visibility("default")))

typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t; /* only passed through */
struct qemu_plugin_tb;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr,
                                              uint64_t imm);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
void qemu_plugin_outs(const char *string);

EXPORTED int qemu_plugin_version = 1;

static uint64_t instructions;
static const char *out_path;
static bool reported;

/* Writes the count once: at QEMU's plugin exit, or at exit() when semihosting ends the run. */
static void report(void) {
  if (reported) return;
  reported = true;
  char line[64];
  snprintf(line, sizeof(line), "instructions=%llu\n", (unsigned long long)instructions);
  FILE *f = out_path != NULL ? fopen(out_path, "w") : NULL;
  if (f != NULL) {
    fputs(line, f);
    fclose(f);
  } else {
    qemu_plugin_outs(line);
  }
}

static void on_exit_cb(qemu_plugin_id_t id, void *userdata) {
  (void)id;
  (void)userdata;
  report();
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
  (void)id;
  qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &instructions,
                                           (uint64_t)qemu_plugin_tb_n_insns(tb));
}

EXPORTED int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
  (void)info;
  for (int i = 0; i < argc; i++) {
    if (strncmp(argv[i], "out=", 4) == 0) {
      out_path = argv[i] + 4;
    } else {
      fprintf(stderr, "tinyseg_insncount: unknown argument %s (expected out=PATH)\n", argv[i]);
      return -1;
    }
  }
  qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
  qemu_plugin_register_atexit_cb(id, on_exit_cb, NULL);
  atexit(report); /* semihosting's SYS_EXIT ends QEMU through exit() */
  return 0;
}
