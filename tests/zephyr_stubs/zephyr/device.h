/* Stand-in for Zephyr's include/zephyr/device.h. DEVICE_DT_GET(node) names the device object
 * <node>_device that the stand-in devicetree declares. */
#ifndef ZEPHYR_INCLUDE_DEVICE_H_
#define ZEPHYR_INCLUDE_DEVICE_H_
#include <stdbool.h>
#include <zephyr/devicetree.h>

struct device {
  const char *name;
};

bool device_is_ready(const struct device *dev); /* a syscall in Zephyr */

#define DEVICE_DT_GET(node_id) (&STUB_CAT(node_id, _device))

#endif
