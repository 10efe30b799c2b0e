/* crc16.c - see crc16.h. */
#include "crc16.h"

uint16_t crc16_ccitt_update(uint16_t crc, const uint8_t *data, size_t len) {
    if (data == NULL) {
        return crc;
    }
    for (size_t i = 0; i < len; i++) {
        crc = (uint16_t)(crc ^ (uint16_t)((uint16_t)data[i] << 8));
        for (unsigned bit = 0; bit < 8u; bit++) {
            if ((crc & 0x8000u) != 0u) {
                crc = (uint16_t)((uint16_t)(crc << 1) ^ 0x1021u);
            } else {
                crc = (uint16_t)(crc << 1);
            }
        }
    }
    return crc;
}

uint16_t crc16_ccitt_false(const uint8_t *data, size_t len) {
    return crc16_ccitt_update(CRC16_CCITT_FALSE_INIT, data, len);
}
