/* QEMU TCG plugin: counts the guest instructions the firmware executes and writes
 * "instructions=N" to the file given as out=PATH (else to QEMU's log).
 *
 *   cc -O2 -shared -fPIC -fvisibility=hidden -o libtinyseg_insncount.so tinyseg_insncount.c
 *   qemu-system-arm ... -plugin ./libtinyseg_insncount.so,out=instructions.txt
 *
 * With mark=ADDR (hex, the entry of a profile build's tinyseg_profile_mark) it also writes
 * "marks=C1,C2,...": the count each time that address was executed, so the instructions between
 * two marks are one kernel's (tinyseg run --profile).
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
struct qemu_plugin_insn;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, qemu_plugin_vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr,
                                              uint64_t imm);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
void qemu_plugin_outs(const char *string);

EXPORTED int qemu_plugin_version = 1;

static uint64_t instructions;
static const char *out_path;
static bool reported;
static bool profiling;
static uint64_t mark_address;
static uint64_t *marks; /* the count at each execution of mark_address */
static size_t n_marks, marks_capacity;

/* Writes the count once: at QEMU's plugin exit, or at exit() when semihosting ends the run. */
static void report(void) {
  if (reported) return;
  reported = true;
  char line[64];
  snprintf(line, sizeof(line), "instructions=%llu\n", (unsigned long long)instructions);
  FILE *f = out_path != NULL ? fopen(out_path, "w") : NULL;
  if (f != NULL) {
    fputs(line, f);
    if (profiling) {
      fputs("marks=", f);
      for (size_t i = 0; i < n_marks; i++) fprintf(f, i ? ",%llu" : "%llu", (unsigned long long)marks[i]);
      fputs("\n", f);
    }
    fclose(f);
  } else {
    qemu_plugin_outs(line);
  }
}

static void on_mark(unsigned int vcpu_index, void *userdata) {
  (void)vcpu_index;
  (void)userdata;
  if (n_marks == marks_capacity) {
    size_t capacity = marks_capacity ? 2 * marks_capacity : 256;
    uint64_t *grown = realloc(marks, capacity * sizeof(*marks));
    if (grown == NULL) return; /* the profile then has too few marks, which the reader reports */
    marks = grown;
    marks_capacity = capacity;
  }
  marks[n_marks++] = instructions;
}

static void on_exit_cb(qemu_plugin_id_t id, void *userdata) {
  (void)id;
  (void)userdata;
  report();
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
  (void)id;
  size_t n = qemu_plugin_tb_n_insns(tb);
  qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &instructions, (uint64_t)n);
  if (!profiling) return;
  for (size_t i = 0; i < n; i++) {
    struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
    if (qemu_plugin_insn_vaddr(insn) == mark_address) {
      qemu_plugin_register_vcpu_insn_exec_cb(insn, on_mark, QEMU_PLUGIN_CB_NO_REGS, NULL);
    }
  }
}

EXPORTED int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
  (void)info;
  for (int i = 0; i < argc; i++) {
    if (strncmp(argv[i], "out=", 4) == 0) {
      out_path = argv[i] + 4;
    } else if (strncmp(argv[i], "mark=", 5) == 0) {
      profiling = true;
      mark_address = strtoull(argv[i] + 5, NULL, 16);
    } else {
      fprintf(stderr, "tinyseg_insncount: unknown argument %s (expected out=PATH or mark=ADDR)\n", argv[i]);
      return -1;
    }
  }
  qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
  qemu_plugin_register_atexit_cb(id, on_exit_cb, NULL);
  atexit(report); /* semihosting's SYS_EXIT ends QEMU through exit() */
  return 0;
}
