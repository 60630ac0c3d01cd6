/* Stand-in for Zephyr's include/zephyr/sys/reboot.h. */
#ifndef ZEPHYR_INCLUDE_SYS_REBOOT_H_
#define ZEPHYR_INCLUDE_SYS_REBOOT_H_

#define SYS_REBOOT_WARM 0
#define SYS_REBOOT_COLD 1

__attribute__((noreturn)) void sys_reboot(int type);

#endif
