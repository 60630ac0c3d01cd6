// TinySeg on an Arduino Mega class board: one inference per input received on the I/O port.
//
// Serial (UART0) is the storage link: spilled tensors go to the host's storage server
// (TinySegModel/src/tinyseg_link_serial.cpp). Serial1 (UART1) is the model's I/O port: it receives
// TINYSEG_INPUT_BYTES raw input bytes and answers with an 18-byte header, little-endian,
//   'T' 'S' | tinyseg_run status u8 | 0 | storage bytes written u32 | read u32 | run time us u32 |
//   stack bytes never touched u16
// followed by TINYSEG_OUTPUT_BYTES raw output bytes. The input is written straight into the
// model's arena and the output sent from it: the sketch needs no tensor buffer of its own.
#include <TinySegModel.h>

#ifndef TINYSEG_IO
#define TINYSEG_IO Serial1
#endif
#ifndef TINYSEG_IO_BAUD
#define TINYSEG_IO_BAUD 500000UL
#endif

static const uint8_t STACK_PAINT = 0xC5;
static const uint8_t STACK_MARGIN = 32;  // bytes below the painter's own frame left unpainted
extern "C" uint8_t __heap_start;          // end of .bss: the stack grows down towards it (no malloc here)

// Paints the free SRAM between .bss and the stack so stack_untouched() can measure the peak.
static void __attribute__((noinline)) paint_stack() {
  for (uint8_t *p = &__heap_start; p < (uint8_t *)SP - STACK_MARGIN; p++) *p = STACK_PAINT;
}

static uint16_t stack_untouched() {
  uint16_t n = 0;
  for (const uint8_t *p = &__heap_start; *p == STACK_PAINT && p < (uint8_t *)SP; p++) n++;
  return n;
}

static void put_u32(uint8_t *p, uint32_t v) {
  for (uint8_t i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

void setup() {
  TINYSEG_IO.begin(TINYSEG_IO_BAUD);
}

void loop() {
  uint8_t *input = (uint8_t *)tinyseg_input_buffer();
  for (uint16_t i = 0; i < TINYSEG_INPUT_BYTES;) {
    int c = TINYSEG_IO.read();
    if (c >= 0) input[i++] = (uint8_t)c;
  }
  uint32_t written = tinyseg_storage_bytes_written, read = tinyseg_storage_bytes_read;
  paint_stack();
  uint32_t start = micros();
  int status = tinyseg_run(tinyseg_input_buffer(), tinyseg_output_buffer());
  uint32_t elapsed = micros() - start;
  uint16_t untouched = stack_untouched();

  uint8_t header[18] = {'T', 'S', (uint8_t)status, 0};
  put_u32(header + 4, tinyseg_storage_bytes_written - written);
  put_u32(header + 8, tinyseg_storage_bytes_read - read);
  put_u32(header + 12, elapsed);
  header[16] = (uint8_t)untouched;
  header[17] = (uint8_t)(untouched >> 8);
  TINYSEG_IO.write(header, sizeof header);
  TINYSEG_IO.write((const uint8_t *)tinyseg_output_buffer(), TINYSEG_OUTPUT_BYTES);
  TINYSEG_IO.flush();
}
