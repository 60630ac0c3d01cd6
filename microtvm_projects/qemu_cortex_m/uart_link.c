/* The remote-storage link (tinyseg_link.h) on the mps2-an500 board: CMSDK APB UART0, which QEMU
 * connects to the storage server with -serial tcp:127.0.0.1:PORT. Polled, no interrupts.
 *
 * A byte that does not move within TINYSEG_UART_TIMEOUT_SPINS status polls fails the call (the
 * server is gone or silent); storage_remote.c turns that into TINYSEG_ERR_STORAGE_LINK. */
#include <stdint.h>

#include "tinyseg_link.h"

#ifndef TINYSEG_UART_TIMEOUT_SPINS
#define TINYSEG_UART_TIMEOUT_SPINS 20000000u
#endif

typedef struct {
  volatile uint32_t data;
  volatile uint32_t state; /* bit 0: TX buffer full, bit 1: RX buffer full */
  volatile uint32_t ctrl;  /* bit 0: TX enable, bit 1: RX enable */
  volatile uint32_t intstatus;
  volatile uint32_t bauddiv;
} cmsdk_uart_t;

#define UART0 ((cmsdk_uart_t *)0x40004000u)
#define STATE_TX_FULL 1u
#define STATE_RX_FULL 2u
#define CTRL_TX_RX_ENABLE 3u
#define BAUDDIV_MIN 16u /* the smallest divisor the UART accepts; QEMU does not model the baud rate */

static int uart_ready;

static void uart_init(void) {
  if (uart_ready) return;
  UART0->bauddiv = BAUDDIV_MIN;
  UART0->ctrl = CTRL_TX_RX_ENABLE;
  uart_ready = 1;
}

/* Polls until the state bit reads `want`; 0 when it did, -1 on timeout. */
static int uart_wait(uint32_t bit, uint32_t want) {
  for (uint32_t spins = 0; spins < TINYSEG_UART_TIMEOUT_SPINS; spins++) {
    if ((UART0->state & bit) == want) return 0;
  }
  return -1;
}

int tinyseg_link_send(const uint8_t *data, uint16_t n) {
  uart_init();
  for (uint16_t i = 0; i < n; i++) {
    if (uart_wait(STATE_TX_FULL, 0u) != 0) return -1;
    UART0->data = data[i];
  }
  return 0;
}

int tinyseg_link_recv(uint8_t *data, uint16_t n) {
  uart_init();
  for (uint16_t i = 0; i < n; i++) {
    if (uart_wait(STATE_RX_FULL, STATE_RX_FULL) != 0) return -1;
    data[i] = (uint8_t)UART0->data;
  }
  return 0;
}
