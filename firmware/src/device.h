/*
 * device.h - the stimulator box's state machine, hard limits and watchdog.
 *
 * States: DISARMED -> (ARM) -> ARMED -> (STIM_ON) -> STIMULATING -> (STIM_OFF of all channels) -> ARMED
 *         any -> (DISARM) -> DISARMED, except FAULT, which DISARM does not leave;
 *         any -> (ESTOP) -> FAULT(ESTOP); ARMED/STIMULATING -> (no heartbeat for DEV_WATCHDOG_MS)
 *         -> FAULT(WATCHDOG); FAULT -> (CLEAR_FAULT) -> DISARMED.
 * Faults latch: in FAULT every output and trigger is off, and ARM, SET_CHANNEL, STIM_ON and
 * TRIGGER are refused (NACK FAULT_LATCHED) until an explicit CLEAR_FAULT, after which the device
 * is DISARMED and must be armed and switched on again. Channel settings survive a fault.
 *
 * Watchdog: only HEARTBEAT (and ARM, which starts the watch) feeds it. While ARMED or
 * STIMULATING, the first device_tick()/device_rx() at which now - last_heartbeat >= DEV_WATCHDOG_MS
 * turns every output off and latches FAULT(WATCHDOG). With a 1 ms tick the outputs are off at
 * most DEV_WATCHDOG_MS + 1 ms after the last heartbeat; DEV_WATCHDOG_MS = 90 keeps that under
 * the 100 ms requirement with margin for tick jitter.
 *
 * Hard limits (compiled in; the host cannot raise them; a build may only lower them, which the
 * static assertions below enforce). Sources in firmware/README.md:
 *   current <= 100 mA, pulse width <= 500 us, 0.1 Hz <= frequency <= 100 Hz,
 *   charge per phase (current x pulse width) <= 40 uC, current rise <= 100 mA/s (100 uA per ms
 *   tick; decreases are immediate), trigger pulse <= 1000 ms.
 *
 * The ramp: STIM_ON starts a channel at 0 uA; each tick (at most one step per ms) raises the
 * applied current by DEV_RAMP_UA_PER_MS toward the target; a lower target applies at once.
 *
 * Every frame gets exactly one reply. An EVENT frame (device timestamp) is sent whenever the
 * state, fault cause, output mask or trigger mask changes, before the reply that caused it.
 */
#ifndef STIMBOX_DEVICE_H
#define STIMBOX_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "protocol.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DEV_FW_MAJOR 1u
#define DEV_FW_MINOR 0u
#define DEV_N_CHANNELS PROTO_N_CHANNELS
#define DEV_N_TRIGGERS PROTO_N_TRIGGERS

#ifndef DEV_MAX_CURRENT_UA
#define DEV_MAX_CURRENT_UA 100000u /* 100 mA */
#endif
#ifndef DEV_MAX_PULSE_WIDTH_US
#define DEV_MAX_PULSE_WIDTH_US 500u
#endif
#ifndef DEV_MAX_FREQUENCY_DHZ
#define DEV_MAX_FREQUENCY_DHZ 1000u /* 100 Hz */
#endif
#ifndef DEV_MAX_CHARGE_NC
#define DEV_MAX_CHARGE_NC 40000u /* 40 uC per phase */
#endif
#ifndef DEV_RAMP_UA_PER_MS
#define DEV_RAMP_UA_PER_MS 100u /* 100 mA/s */
#endif
#ifndef DEV_WATCHDOG_MS
#define DEV_WATCHDOG_MS 90u
#endif
#ifndef DEV_MAX_TRIGGER_MS
#define DEV_MAX_TRIGGER_MS 1000u
#endif

_Static_assert(DEV_MAX_CURRENT_UA <= 100000u, "a build may only lower the current limit");
_Static_assert(DEV_MAX_PULSE_WIDTH_US <= 500u, "a build may only lower the pulse width limit");
_Static_assert(DEV_MAX_FREQUENCY_DHZ <= 1000u && DEV_MAX_FREQUENCY_DHZ >= 1u, "frequency limit in (0, 100 Hz]");
_Static_assert(DEV_MAX_CHARGE_NC <= 40000u, "a build may only lower the charge limit");
_Static_assert(DEV_RAMP_UA_PER_MS >= 1u && DEV_RAMP_UA_PER_MS <= 100u, "ramp in [1, 100] uA/ms");
_Static_assert(DEV_WATCHDOG_MS >= 10u && DEV_WATCHDOG_MS <= 95u, "watchdog must act within 100 ms");
_Static_assert(DEV_MAX_TRIGGER_MS >= 1u && DEV_MAX_TRIGGER_MS <= 1000u, "trigger pulse in [1, 1000] ms");

/** Return codes of device_init. */
typedef enum {
    DEVICE_RET_OK = 0,
    DEVICE_RET_ERR_BAD_ARG = 1 /**< NULL device */
} device_ret_t;

typedef struct {
    uint32_t target_ua;  /* set by SET_CHANNEL */
    uint32_t applied_ua; /* delivered; ramps toward target_ua while on */
    uint16_t pulse_width_us;
    uint16_t frequency_dhz;
    bool configured; /* SET_CHANNEL accepted at least once */
    bool on;
} device_channel_t;

/** What was last given to the HAL for one channel (outputs are only touched on change). */
typedef struct {
    bool on;
    uint32_t current_ua;
    uint16_t pulse_width_us;
    uint16_t frequency_dhz;
} device_hal_shadow_t;

/** The whole device; the caller owns it (a static on the MCU). Fields are private. */
typedef struct {
    proto_state_t state;
    proto_fault_t fault;
    device_channel_t ch[DEV_N_CHANNELS];
    device_hal_shadow_t hal_ch[DEV_N_CHANNELS];
    uint8_t triggers;            /* bit i: line i high */
    uint8_t hal_triggers;        /* as last written to the HAL */
    uint32_t trigger_until[DEV_N_TRIGGERS];
    uint32_t now_ms;             /* last time seen */
    uint32_t last_heartbeat_ms;  /* ARM or HEARTBEAT */
    bool heartbeat_seen;
    uint32_t last_ramp_ms;
    uint16_t last_seq;
    bool seq_valid;
    uint16_t event_seq;
    /* last state reported by an EVENT */
    proto_state_t evt_state;
    proto_fault_t evt_fault;
    uint8_t evt_outputs;
    uint8_t evt_triggers;
    /* counters */
    uint32_t rx_ok;
    uint32_t rejected[PROTO_NACK_COUNT];
    /* I/O buffers */
    proto_rx_t rx;
    uint8_t tx[PROTO_MAX_WIRE];
} device_t;

/**
 * Reset d to DISARMED with every channel unconfigured and every output and trigger off (the HAL
 * is told so). now_ms is the HAL time.
 * @return DEVICE_RET_OK; DEVICE_RET_ERR_BAD_ARG if d is NULL.
 */
device_ret_t device_init(device_t *d, uint32_t now_ms);

/**
 * Feed received UART bytes. Each complete frame is handled as by device_handle_raw(); a frame
 * the COBS layer rejects (malformed or longer than PROTO_MAX_RAW) gets NACK BAD_FRAMING with
 * seq 0 and cmd 0. The watchdog is checked first. NULL d or bytes: nothing happens.
 * @return the number of frames answered (ACK or NACK).
 */
size_t device_rx(device_t *d, const uint8_t *bytes, size_t n, uint32_t now_ms);

/**
 * Handle one COBS-decoded frame raw[0..len) and send its reply (preceded by an EVENT when the
 * command changed the state or outputs). Check order: framing/length, CRC, version, command code,
 * payload length, sequence, then the command's own checks. Frames rejected before the sequence
 * check do not move the sequence window. NULL d: returns PROTO_NACK_BAD_FRAMING, sends nothing.
 * @return PROTO_NACK_NONE if the frame was ACKed, else the NACK reason sent.
 */
proto_nack_t device_handle_raw(device_t *d, const uint8_t *raw, size_t len, uint32_t now_ms);

/**
 * The 1 ms tick: watchdog, current ramps, trigger expiry, EVENT on change. Ticks at the same
 * now_ms as the previous one do not ramp again. NULL d: nothing happens.
 */
void device_tick(device_t *d, uint32_t now_ms);

/** Snapshot for a STATUS reply (t_ms = the last now_ms seen). Both pointers must be valid. */
void device_status(const device_t *d, proto_status_t *out);

/** Fill the HELLO reply data (identity and the compiled-in limits). out must be valid. */
void device_hello(proto_hello_t *out);

/**
 * Check SET_CHANNEL values against the hard limits, without touching any state.
 * @return PROTO_NACK_NONE if acceptable; PROTO_NACK_BAD_ARG (channel >= DEV_N_CHANNELS or
 *         frequency 0) or PROTO_NACK_LIMIT (current, pulse width, frequency, or charge =
 *         current x pulse width above its limit), with *detail set to the proto_field_t.
 *         Checks run in the order channel, current, pulse width, frequency, charge.
 */
proto_nack_t device_check_channel(const proto_set_channel_t *c, uint8_t *detail);

/**
 * The safety invariants, for tests and the fuzzer: every channel within the hard limits with
 * applied <= target, outputs on only while STIMULATING, triggers only while ARMED/STIMULATING,
 * HAL shadow equal to the channel state, FAULT iff a fault cause is set.
 * @return true if all hold.
 */
bool device_invariants_ok(const device_t *d);

#ifdef __cplusplus
}
#endif

#endif /* STIMBOX_DEVICE_H */
