/*
 * fuzz_libfuzzer.c - libFuzzer entry point for the frame parser and device (built by
 * `make fuzz-libfuzzer` only when clang is installed). The first input byte is the time to advance
 * after feeding the rest (0..255 ms, so the watchdog and ramps are reached too).
 */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int initialised;
    if (!initialised) {
        fuzz_init();
        initialised = 1;
    }
    if (size == 0) {
        return 0;
    }
    fuzz_step(data + 1, size - 1u, data[0]);
    return 0;
}
