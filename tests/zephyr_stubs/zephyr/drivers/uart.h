/* Stand-in for Zephyr's include/zephyr/drivers/uart.h: the polled calls (syscalls in Zephyr). */
#ifndef ZEPHYR_INCLUDE_DRIVERS_UART_H_
#define ZEPHYR_INCLUDE_DRIVERS_UART_H_
#include <zephyr/device.h>

int uart_poll_in(const struct device *dev, unsigned char *p_char);
void uart_poll_out(const struct device *dev, unsigned char out_char);

#endif
