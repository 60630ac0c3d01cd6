/* Stand-in for Zephyr's include/zephyr/kernel.h: the few kernel APIs the project uses. */
#ifndef ZEPHYR_INCLUDE_KERNEL_H_
#define ZEPHYR_INCLUDE_KERNEL_H_
#include <stddef.h>
#include <stdint.h>
#include <zephyr/sys/printk.h>

/* include/zephyr/toolchain/gcc.h */
#define BUILD_ASSERT(EXPR, MSG...) _Static_assert((EXPR), "" MSG)

int64_t k_uptime_get(void); /* static inline over a syscall in Zephyr; a plain function here */

static inline uint32_t k_uptime_get_32(void) { return (uint32_t)k_uptime_get(); }

#endif
