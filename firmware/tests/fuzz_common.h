/*
 * fuzz_common.h - one fuzz step shared by the randomised runner (gcc) and the libFuzzer target
 * (clang): feed bytes to the device at an advancing time, run the one-shot parsers on them too,
 * and abort() with a message if any safety invariant or protocol promise breaks:
 *   - device_invariants_ok() after every byte batch and every tick,
 *   - no hal_output_set() beyond a hard limit or the ramp (fake HAL),
 *   - every frame the device sends decodes (COBS + CRC) and is an ACK, NACK or EVENT,
 *   - exactly one ACK/NACK per frame the device reports having answered.
 */
#ifndef STIMBOX_FUZZ_COMMON_H
#define STIMBOX_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

void fuzz_init(void);
void fuzz_step(const uint8_t *bytes, size_t n, uint32_t advance_ms);
unsigned long long fuzz_answered(void);

#endif
