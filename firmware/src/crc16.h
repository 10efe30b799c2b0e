/*
 * crc16.h - CRC-16/CCITT-FALSE: polynomial 0x1021, init 0xFFFF, no reflection, no final XOR.
 * Check value: crc16_ccitt_false("123456789", 9) == 0x29B1.
 * Pure C11, freestanding, bitwise (no table: 0 bytes of RAM/flash beyond the code).
 */
#ifndef STIMBOX_CRC16_H
#define STIMBOX_CRC16_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CRC16_CCITT_FALSE_INIT 0xFFFFu

/**
 * Continue a CRC over data[0..len). Start with crc = CRC16_CCITT_FALSE_INIT.
 * data may be NULL only when len == 0 (then crc is returned unchanged).
 * @return the updated CRC (no error codes: the function cannot fail).
 */
uint16_t crc16_ccitt_update(uint16_t crc, const uint8_t *data, size_t len);

/** CRC-16/CCITT-FALSE of data[0..len) (same NULL rule as crc16_ccitt_update). */
uint16_t crc16_ccitt_false(const uint8_t *data, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* STIMBOX_CRC16_H */
