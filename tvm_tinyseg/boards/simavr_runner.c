/* tinyseg_simavr: runs the Arduino TinySeg sketch (microtvm_projects/arduino) in simavr.
 *
 *   tinyseg_simavr FIRMWARE.elf INPUT.bin OUTPUT.bin OUTPUT_BYTES [--link PORT] [--max-cycles N]
 *
 * The sketch's two serial ports become:
 *   UART0 (Serial, the storage link) <-> the storage server on 127.0.0.1:PORT (TCP). The bridge
 *     knows the frame format of storage_remote.c: it forwards a request once it is complete and
 *     waits for the whole response before the AVR runs on, so the host's latency costs no
 *     emulated cycles and cycle counts do not depend on the host's speed.
 *   UART1 (Serial1, the model's I/O port) <- INPUT.bin, raw; -> the sketch's reply: a header
 *     "TS" | status u8 | 0 | storage bytes written u32 | read u32 | run micros u32 | stack free u16
 *     (little-endian), then OUTPUT_BYTES bytes written to OUTPUT.bin.
 * Bytes enter the AVR's receivers only while simavr signals XON (room in its input FIFO).
 *
 * On success it prints "tinyseg-stats: key=value ..." on stderr and exits 0; the model's non-zero
 * status exits 3; a simulation, link or usage failure exits 2 with one line on stderr. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <simavr/avr_uart.h>
#include <simavr/sim_avr.h>
#include <simavr/sim_elf.h>
#include <simavr/sim_irq.h>

#define MCU "atmega2560"
#define FREQUENCY 16000000u
#define DEFAULT_MAX_CYCLES 4000000000ull /* 250 s at 16 MHz: a sketch stuck waiting ends */
#define LINK_TIMEOUT_SECONDS 10

#define REPLY_HEADER_BYTES 18u
#define REQUEST_SYNC 0xA5u
#define REQUEST_HEAD_BYTES 8u  /* sync, op, offset u32, length u16 */
#define RESPONSE_HEAD_BYTES 4u /* sync, status, length u16 */
#define CRC_BYTES 2u
#define MAX_PAYLOAD 256u
#define MAX_FRAME (REQUEST_HEAD_BYTES + MAX_PAYLOAD + CRC_BYTES)

/* Bytes waiting to enter one AVR receiver. */
typedef struct {
  avr_irq_t *input;
  const uint8_t *data;
  size_t length, position;
  int xon;
} feeder_t;

static avr_t *avr;
static feeder_t io_feed, link_feed;
static uint8_t *reply;
static size_t reply_bytes, reply_length;
static int link_fd = -1;
static uint8_t request[MAX_FRAME], response[MAX_FRAME];
static size_t request_length;
static uint64_t link_frames;

static void fail(const char *what) {
  fprintf(stderr, "tinyseg_simavr: %s\n", what);
  exit(2);
}

static void feed(feeder_t *f) {
  while (f->xon && f->position < f->length) avr_raise_irq(f->input, f->data[f->position++]);
}

static void on_xon(avr_irq_t *irq, uint32_t value, void *param) {
  (void)irq, (void)value;
  feeder_t *f = param;
  f->xon = 1;
  feed(f);
}

static void on_xoff(avr_irq_t *irq, uint32_t value, void *param) {
  (void)irq, (void)value;
  ((feeder_t *)param)->xon = 0;
}

static void on_io_output(avr_irq_t *irq, uint32_t value, void *param) {
  (void)irq, (void)param;
  if (reply_length < reply_bytes) reply[reply_length++] = (uint8_t)value;
}

static void link_send(const uint8_t *data, size_t n) {
  if (link_fd < 0) fail("the sketch uses its storage link but no server was given (--link PORT)");
  if (send(link_fd, data, n, MSG_NOSIGNAL) != (ssize_t)n) fail("storage link: send failed");
}

static void link_recv(uint8_t *into, size_t n) {
  for (size_t got = 0; got < n;) {
    ssize_t r = recv(link_fd, into + got, n - got, 0);
    if (r <= 0) fail("storage link: the server closed the connection or did not answer");
    got += (size_t)r;
  }
}

/* Collects the AVR's request bytes; a complete frame goes to the server and its whole response
 * is queued for the AVR's receiver. Bytes outside a frame pass through to the server unparsed. */
static void on_link_output(avr_irq_t *irq, uint32_t value, void *param) {
  (void)irq, (void)param;
  uint8_t byte = (uint8_t)value;
  if (request_length == 0 && byte != REQUEST_SYNC) {
    link_send(&byte, 1);
    return;
  }
  request[request_length++] = byte;
  if (request_length < REQUEST_HEAD_BYTES) return;
  uint16_t length = (uint16_t)(request[6] | (request[7] << 8));
  size_t payload = request[1] == 'R' || length > MAX_PAYLOAD ? 0u : length;
  if (request_length < REQUEST_HEAD_BYTES + payload + CRC_BYTES) return;
  link_send(request, request_length);
  request_length = 0;
  link_recv(response, RESPONSE_HEAD_BYTES);
  uint16_t answered = (uint16_t)(response[2] | (response[3] << 8));
  if (answered > MAX_PAYLOAD) fail("storage link: oversize response");
  link_recv(response + RESPONSE_HEAD_BYTES, answered + CRC_BYTES);
  link_frames++;
  link_feed.data = response;
  link_feed.length = RESPONSE_HEAD_BYTES + answered + CRC_BYTES;
  link_feed.position = 0;
  feed(&link_feed);
}

static void connect_link(int port) {
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  struct timeval timeout = {.tv_sec = LINK_TIMEOUT_SECONDS};
  int one = 1;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  link_fd = socket(AF_INET, SOCK_STREAM, 0);
  if (link_fd < 0 || connect(link_fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    fail("cannot connect to the storage server");
  }
  setsockopt(link_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(link_fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
}

static void attach_uart(char name, feeder_t *f, avr_irq_notify_t on_output) {
  uint32_t flags = 0; /* no console echo, no host sleeps while the AVR polls its receiver */
  avr_ioctl(avr, AVR_IOCTL_UART_SET_FLAGS(name), &flags);
  avr_irq_t *irq = avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ(name), UART_IRQ_INPUT);
  if (irq == NULL) fail("the MCU has no such UART");
  f->input = irq + UART_IRQ_INPUT;
  avr_irq_register_notify(irq + UART_IRQ_OUTPUT, on_output, NULL);
  avr_irq_register_notify(irq + UART_IRQ_OUT_XON, on_xon, f);
  avr_irq_register_notify(irq + UART_IRQ_OUT_XOFF, on_xoff, f);
}

static uint8_t *read_file(const char *path, size_t *length) {
  FILE *f = fopen(path, "rb");
  if (f == NULL || fseek(f, 0, SEEK_END) != 0) fail("cannot open the input file");
  long size = ftell(f);
  uint8_t *data = malloc(size > 0 ? (size_t)size : 1u);
  rewind(f);
  if (size < 0 || data == NULL || fread(data, 1, (size_t)size, f) != (size_t)size) fail("cannot read the input file");
  fclose(f);
  *length = (size_t)size;
  return data;
}

static uint32_t u32_at(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int main(int argc, char **argv) {
  if (argc < 5) fail("usage: tinyseg_simavr FIRMWARE.elf INPUT.bin OUTPUT.bin OUTPUT_BYTES [--link PORT] [--max-cycles N]");
  int port = 0;
  unsigned long long max_cycles = DEFAULT_MAX_CYCLES;
  for (int i = 5; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--link") == 0) port = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--max-cycles") == 0) max_cycles = strtoull(argv[i + 1], NULL, 0);
    else fail("unknown option");
  }
  size_t output_bytes = strtoul(argv[4], NULL, 0);
  reply_bytes = REPLY_HEADER_BYTES + output_bytes;
  reply = calloc(reply_bytes, 1);
  if (reply == NULL) fail("out of memory");
  io_feed.data = read_file(argv[2], &io_feed.length);

  elf_firmware_t firmware;
  memset(&firmware, 0, sizeof firmware);
  if (elf_read_firmware(argv[1], &firmware) != 0) fail("cannot read the firmware ELF");
  strcpy(firmware.mmcu, MCU);
  firmware.frequency = FREQUENCY;
  avr = avr_make_mcu_by_name(firmware.mmcu);
  if (avr == NULL) fail("simavr does not know the MCU");
  avr_init(avr);
  avr_load_firmware(avr, &firmware);
  attach_uart('1', &io_feed, on_io_output);
  attach_uart('0', &link_feed, on_link_output);
  if (port > 0) connect_link(port);

  int state = cpu_Running;
  while (reply_length < reply_bytes && state != cpu_Done && state != cpu_Crashed && avr->cycle < max_cycles) {
    state = avr_run(avr);
  }
  if (reply_length < reply_bytes) {
    fail(state == cpu_Crashed ? "the AVR crashed" : state == cpu_Done ? "the sketch stopped before replying"
                                                                      : "cycle limit reached before the reply");
  }
  if (reply[0] != 'T' || reply[1] != 'S') fail("malformed reply on the I/O port");
  FILE *out = fopen(argv[3], "wb");
  if (out == NULL || fwrite(reply + REPLY_HEADER_BYTES, 1, output_bytes, out) != output_bytes) {
    fail("cannot write the output file");
  }
  fclose(out);
  fprintf(stderr,
          "tinyseg-stats: status=%u storage_written=%lu storage_read=%lu run_us=%lu stack_free=%u cycles=%llu "
          "link_frames=%llu\n",
          reply[2], (unsigned long)u32_at(reply + 4), (unsigned long)u32_at(reply + 8),
          (unsigned long)u32_at(reply + 12), (unsigned)(reply[16] | reply[17] << 8),
          (unsigned long long)avr->cycle, (unsigned long long)link_frames);
  return reply[2] == 0 ? 0 : 3;
}
