/* The compiled model for Arduino sketches: the generated C API (tinyseg_model.h) and the storage
 * counters, with C linkage for the C++ sketch. */
#ifndef TINYSEG_MODEL_ARDUINO_H
#define TINYSEG_MODEL_ARDUINO_H

#ifdef __cplusplus
extern "C" {
#endif
#include "tinyseg_model.h"
#include "tinyseg_storage.h"
#ifdef __cplusplus
}
#endif

#endif /* TINYSEG_MODEL_ARDUINO_H */
