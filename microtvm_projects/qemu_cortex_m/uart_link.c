/* The remote-storage link (tinyseg_link.h) on the mps2-an500 board: CMSDK APB UART0, which QEMU
 * connects to the storage server with -serial tcp:127.0.0.1:PORT. Polled, no interrupts.
 *
 * A byte that does not move within TINYSEG_UART_TIMEOUT_MS fails the call (the server is gone or
 * silent); storage_remote.c turns that into TINYSEG_ERR_STORAGE_LINK. The clock is CMSDK APB
 * timer 0, free-running at the 25 MHz peripheral clock, which nothing else on the board uses. */
#include <stdint.h>

#include "tinyseg_link.h"

#ifndef TINYSEG_UART_TIMEOUT_MS
#define TINYSEG_UART_TIMEOUT_MS 3000u
#endif
#define TIMER_TICKS_PER_MS 25000u

typedef struct {
  volatile uint32_t data;
  volatile uint32_t state; /* bit 0: TX buffer full, bit 1: RX buffer full */
  volatile uint32_t ctrl;  /* bit 0: TX enable, bit 1: RX enable */
  volatile uint32_t intstatus;
  volatile uint32_t bauddiv;
} cmsdk_uart_t;

typedef struct {
  volatile uint32_t ctrl; /* bit 0: enable */
  volatile uint32_t value;
  volatile uint32_t reload;
  volatile uint32_t intstatus;
} cmsdk_timer_t;

#define UART0 ((cmsdk_uart_t *)0x40004000u)
#define TIMER0 ((cmsdk_timer_t *)0x40000000u)
#define STATE_TX_FULL 1u
#define STATE_RX_FULL 2u
#define CTRL_TX_RX_ENABLE 3u
#define BAUDDIV_MIN 16u /* the smallest divisor the UART accepts; QEMU does not model the baud rate */

static int uart_ready;

static void uart_init(void) {
  if (uart_ready) return;
  UART0->bauddiv = BAUDDIV_MIN;
  UART0->ctrl = CTRL_TX_RX_ENABLE;
  TIMER0->reload = 0xFFFFFFFFu;
  TIMER0->value = 0xFFFFFFFFu;
  TIMER0->ctrl = 1u;
  uart_ready = 1;
}

/* Polls until the state bit reads `want`; 0 when it did, -1 on timeout. */
static int uart_wait(uint32_t bit, uint32_t want) {
  uint32_t start = TIMER0->value; /* counts down; the difference is right across a wrap */
  while ((UART0->state & bit) != want) {
    if (start - TIMER0->value > TINYSEG_UART_TIMEOUT_MS * TIMER_TICKS_PER_MS) return -1;
  }
  return 0;
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
