/* Host implementation of the stand-in kernel calls: printk to stdout, uptime from the monotonic
 * clock, sys_reboot as the end of the process. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <zephyr/kernel.h>
#include <zephyr/sys/reboot.h>

void printk(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  fflush(stdout);
}

int64_t k_uptime_get(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* The board's reset: under QEMU (-no-reboot) it ends the emulator, here the process. */
void sys_reboot(int type) {
  printf("stub: sys_reboot(%d)\n", type);
  fflush(stdout);
  exit(0);
}
