/*
 * hal_fake.h - HAL for the unit tests and the fuzzer: records every output and trigger call,
 * checks every hal_output_set() against the hard limits (counting violations), and captures the
 * UART bytes the device sends. In "verify" mode (fuzzer) it decodes every transmitted byte with a
 * stream decoder and counts malformed or CRC-bad device frames instead of storing them.
 */
#ifndef STIMBOX_HAL_FAKE_H
#define STIMBOX_HAL_FAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "device.h"
#include "hal.h"

#define FAKE_TX_CAP 65536u

typedef struct {
    uint32_t now_ms; /* returned by hal_millis() */
    hal_output_t out[DEV_N_CHANNELS];
    bool on[DEV_N_CHANNELS];
    uint32_t on_since_ms[DEV_N_CHANNELS];
    uint32_t off_at_ms[DEV_N_CHANNELS]; /* now_ms at the last hal_output_off */
    bool trig[DEV_N_TRIGGERS];
    unsigned set_calls;
    unsigned off_calls;
    unsigned trig_calls;
    unsigned violations; /* hal_output_set beyond a hard limit, bad channel, or bad line */
    /* capture mode */
    uint8_t tx[FAKE_TX_CAP];
    size_t tx_len;
    size_t tx_read; /* cursor of fake_next_frame */
    bool tx_overflow;
    /* verify mode */
    bool verify;
    cobs_decoder_t vdec;
    uint8_t vbuf[PROTO_MAX_RAW];
    unsigned long long tx_frames;
    unsigned long long tx_bad_frames;
    unsigned long long tx_acks;
    unsigned long long tx_nacks;
    unsigned long long tx_events;
    unsigned long long nack_by_reason[PROTO_NACK_COUNT + 1u];
} fake_hal_t;

extern fake_hal_t g_hal;

/** Reset all records; verify selects the fuzzer's streaming check instead of capture. */
void fake_hal_reset(bool verify);

/**
 * Decode the next captured device frame into raw[0..PROTO_MAX_RAW) and parse it into *f.
 * @return 1 for a frame, 0 when no complete frame is left, -1 for a malformed frame.
 */
int fake_next_frame(uint8_t *raw, proto_frame_t *f);

/** Forget captured bytes. */
void fake_tx_clear(void);

#endif /* STIMBOX_HAL_FAKE_H */
