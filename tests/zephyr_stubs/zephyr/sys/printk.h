/* Stand-in for Zephyr's include/zephyr/sys/printk.h. */
#ifndef ZEPHYR_INCLUDE_SYS_PRINTK_H_
#define ZEPHYR_INCLUDE_SYS_PRINTK_H_
#include <stdarg.h>

#define __printf_like(f, a) __attribute__((format(printf, f, a)))

extern __printf_like(1, 2) void printk(const char *fmt, ...);

#endif
