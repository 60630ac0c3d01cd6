/* Stand-in for Zephyr's include/zephyr/devicetree.h: node labels become stub_node_<label>
 * (expanded first, as DT_NODELABEL does); one UART node, uart1. */
#ifndef ZEPHYR_INCLUDE_DEVICETREE_H_
#define ZEPHYR_INCLUDE_DEVICETREE_H_

#define STUB_CAT_(a, b) a##b
#define STUB_CAT(a, b) STUB_CAT_(a, b)
#define DT_NODELABEL(label) STUB_CAT(stub_node_, label)

struct device;
extern const struct device stub_node_uart1_device;

#endif
