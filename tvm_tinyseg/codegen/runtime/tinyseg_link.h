/* The byte link under the remote storage backend (storage_remote.c): a UART to a host, or on the
 * host itself a TCP socket. Each board provides one implementation of these two calls.
 *
 * Both block until all n bytes have moved and return 0, or nonzero on failure or timeout. A link
 * opens itself at its first call; after a failure the next call may try again. */
#ifndef TINYSEG_LINK_H
#define TINYSEG_LINK_H
#include <stdint.h>

int tinyseg_link_send(const uint8_t *data, uint16_t n);
int tinyseg_link_recv(uint8_t *data, uint16_t n);

#endif /* TINYSEG_LINK_H */
