/* The remote-storage link on the host: a TCP connection to the storage server standing in for a
 * UART. The server is 127.0.0.1:$TINYSEG_STORAGE_PORT; a call that waits longer than
 * $TINYSEG_STORAGE_TIMEOUT_MS (default 5000) fails, as does everything after the server closed. */
#define _POSIX_C_SOURCE 200112L
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "tinyseg_link.h"

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* no SIGPIPE suppression flag on this OS */
#endif
#define DEFAULT_TIMEOUT_MS 5000L

static int link_fd = -1;

static long env_long(const char *name, long fallback) {
  const char *text = getenv(name);
  char *end;
  long value = text != NULL ? strtol(text, &end, 10) : 0;
  return text != NULL && *text != '\0' && *end == '\0' && value > 0 ? value : fallback;
}

/* The connected socket, connecting at the first call; -1 if the server is unreachable. */
static int link_socket(void) {
  if (link_fd >= 0) return link_fd;
  long port = env_long("TINYSEG_STORAGE_PORT", 0);
  if (port <= 0 || port > 65535) return -1;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  long timeout_ms = env_long("TINYSEG_STORAGE_TIMEOUT_MS", DEFAULT_TIMEOUT_MS);
  struct timeval timeout = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  int one = 1;
  struct sockaddr_in server = {0};
  server.sin_family = AF_INET;
  server.sin_port = htons((uint16_t)port);
  server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  /* frames are a few small writes: without TCP_NODELAY each would wait for the previous ACK */
  if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout)) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout)) != 0 ||
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
      connect(fd, (struct sockaddr *)&server, sizeof(server)) != 0) {
    close(fd);
    return -1;
  }
  link_fd = fd;
  return fd;
}

static void link_close(void) {
  close(link_fd);
  link_fd = -1;
}

int tinyseg_link_send(const uint8_t *data, uint16_t n) {
  int fd = link_socket();
  if (fd < 0) return -1;
  while (n > 0) {
    ssize_t sent = send(fd, data, n, MSG_NOSIGNAL);
    if (sent <= 0) {
      link_close();
      return -1;
    }
    data += sent;
    n = (uint16_t)(n - sent);
  }
  return 0;
}

int tinyseg_link_recv(uint8_t *data, uint16_t n) {
  int fd = link_socket();
  if (fd < 0) return -1;
  while (n > 0) {
    ssize_t got = recv(fd, data, n, 0);
    if (got <= 0) { /* closed by the server, timed out or failed */
      link_close();
      return -1;
    }
    data += got;
    n = (uint16_t)(n - got);
  }
  return 0;
}
