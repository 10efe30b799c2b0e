/*
 * hal.h - hardware abstraction layer of the stimulator interface box.
 *
 * The core (cobs, crc16, protocol, device) never touches hardware: it calls these functions,
 * which each target implements once (host/hal_host.c for the pseudo-terminal simulator,
 * tests/hal_fake.c for the unit tests and the fuzzer, a board file for the MCU).
 * The core never calls hal_millis() itself: the main loop reads the timer and passes now_ms to
 * device_tick()/device_rx(), which keeps the core deterministic under test.
 *
 * Contracts every implementation must honour:
 *   - hal_output_off() takes effect before it returns (DAC to zero, pulse timer stopped):
 *     it is the fail-safe path of the watchdog and the e-stop.
 *   - hal_output_set() starts or updates the pulse train of one channel with parameters the
 *     core has already checked against the hard limits.
 *   - hal_uart_write() queues bytes for transmission and never blocks for long; if its queue
 *     is full it may drop bytes (the host sees a reply timeout, never a wrong reply).
 *   - None of them is called from an interrupt by the core; the core is not re-entrant.
 */
#ifndef STIMBOX_HAL_H
#define STIMBOX_HAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Parameters of one channel's biphasic pulse train. */
typedef struct {
    uint32_t current_ua;     /**< phase amplitude, microamperes */
    uint16_t pulse_width_us; /**< phase width, microseconds */
    uint16_t frequency_dhz;  /**< pulse rate, 0.1 Hz units */
} hal_output_t;

/** Monotonic milliseconds since boot; wraps after 2^32 ms (the core uses wrap-safe arithmetic). */
uint32_t hal_millis(void);

/** Start or update channel's pulse train. channel < PROTO_N_CHANNELS. */
void hal_output_set(uint8_t channel, const hal_output_t *out);

/** Stop channel's pulse train (output to zero) before returning. */
void hal_output_off(uint8_t channel);

/** Drive trigger line (0: audio gate, 1: TTL out) high or low. line < PROTO_N_TRIGGERS. */
void hal_trigger_write(uint8_t line, bool high);

/** Queue len bytes for transmission to the host. */
void hal_uart_write(const uint8_t *data, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* STIMBOX_HAL_H */
