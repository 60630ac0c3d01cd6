/* The remote-storage link (tinyseg_link.h) for Zephyr: a UART to the host's storage server
 * (python -m tvm_tinyseg.storage_server on a serial port bridge), polled. Its devicetree node
 * label is TINYSEG_STORAGE_UART (CMake cache variable of the same name; default uart1) — not the
 * console's UART, which printk uses.
 *
 * A byte that does not arrive within TINYSEG_LINK_TIMEOUT_MS fails the call; storage_remote.c
 * turns that into TINYSEG_ERR_STORAGE_LINK. */
#include <zephyr/device.h>
#include <zephyr/devicetree.h>
#include <zephyr/drivers/uart.h>
#include <zephyr/kernel.h>

#include "tinyseg_link.h"

#ifndef TINYSEG_STORAGE_UART
#define TINYSEG_STORAGE_UART uart1
#endif
#ifndef TINYSEG_LINK_TIMEOUT_MS
#define TINYSEG_LINK_TIMEOUT_MS 1000u
#endif

static const struct device *const storage_uart = DEVICE_DT_GET(DT_NODELABEL(TINYSEG_STORAGE_UART));

int tinyseg_link_send(const uint8_t *data, uint16_t n) {
  if (!device_is_ready(storage_uart)) return -1;
  for (uint16_t i = 0; i < n; i++) {
    uart_poll_out(storage_uart, data[i]);
  }
  return 0;
}

int tinyseg_link_recv(uint8_t *data, uint16_t n) {
  if (!device_is_ready(storage_uart)) return -1;
  for (uint16_t i = 0; i < n; i++) {
    uint32_t start = k_uptime_get_32();
    unsigned char byte;
    while (uart_poll_in(storage_uart, &byte) != 0) {
      if (k_uptime_get_32() - start > TINYSEG_LINK_TIMEOUT_MS) return -1;
    }
    data[i] = byte;
  }
  return 0;
}
