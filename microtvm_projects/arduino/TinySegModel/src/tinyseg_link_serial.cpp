/* The byte link of the remote storage backend (storage_remote.c) on Arduino: the board's Serial
 * port, to the host's storage server (python -m tvm_tinyseg.storage_server behind a serial-to-TCP
 * bridge, or the simavr runner). The port opens at the first call. */
#include <Arduino.h>

extern "C" {
#include "tinyseg_link.h"
}

#ifndef TINYSEG_LINK_SERIAL
#define TINYSEG_LINK_SERIAL Serial
#endif
#ifndef TINYSEG_LINK_BAUD
#define TINYSEG_LINK_BAUD 500000UL
#endif
#ifndef TINYSEG_LINK_TIMEOUT_MS
#define TINYSEG_LINK_TIMEOUT_MS 2000UL /* a missing answer fails the storage call, then tinyseg_run */
#endif

static bool link_open;

static void open_link() {
  if (link_open) return;
  TINYSEG_LINK_SERIAL.begin(TINYSEG_LINK_BAUD);
  TINYSEG_LINK_SERIAL.setTimeout(TINYSEG_LINK_TIMEOUT_MS);
  link_open = true;
}

extern "C" int tinyseg_link_send(const uint8_t *data, uint16_t n) {
  open_link();
  return TINYSEG_LINK_SERIAL.write(data, n) == n ? 0 : 1;
}

extern "C" int tinyseg_link_recv(uint8_t *data, uint16_t n) {
  open_link();
  return TINYSEG_LINK_SERIAL.readBytes(data, n) == n ? 0 : 1;
}
