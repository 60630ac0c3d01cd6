/* Host implementation of the stand-in UART: uart1 is a TCP connection to 127.0.0.1 on the port
 * in $STUB_UART_PORT (a storage server), opened at first use; uart_poll_in does not block. */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zephyr/drivers/uart.h>

const struct device stub_node_uart1_device = {.name = "uart1"};
static int sock = -1;

bool device_is_ready(const struct device *dev) {
  if (dev != &stub_node_uart1_device) return false;
  if (sock >= 0) return true;
  const char *port = getenv("STUB_UART_PORT");
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port ? port : "0"))};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sock = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1; /* a frame's bytes go one send() each: no Nagle delay */
  if (sock >= 0 && (setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
                    connect(sock, (struct sockaddr *)&addr, sizeof(addr)) != 0)) {
    close(sock);
    sock = -1;
  }
  return sock >= 0;
}

int uart_poll_in(const struct device *dev, unsigned char *p_char) {
  (void)dev;
  return recv(sock, p_char, 1, MSG_DONTWAIT) == 1 ? 0 : -1;
}

void uart_poll_out(const struct device *dev, unsigned char out_char) {
  (void)dev;
  (void)!send(sock, &out_char, 1, 0);
}
