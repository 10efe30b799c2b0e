/* fuzz_common.c - see fuzz_common.h. */
#include "fuzz_common.h"

#include <stdio.h>
#include <stdlib.h>

#include "cobs.h"
#include "device.h"
#include "hal_fake.h"
#include "protocol.h"

static device_t s_dev;
static uint32_t s_now;
static unsigned long long s_answered;

static void fail(const char *what) {
    fprintf(stderr, "fuzz: INVARIANT BROKEN: %s (t=%u ms, state=%d, fault=%d)\n", what, (unsigned)s_now,
            (int)s_dev.state, (int)s_dev.fault);
    abort();
}

static void check(void) {
    if (!device_invariants_ok(&s_dev)) {
        fail("device_invariants_ok");
    }
    if (g_hal.violations != 0u) {
        fail("HAL output beyond a hard limit or the ramp");
    }
    if (g_hal.tx_bad_frames != 0u) {
        fail("device sent a malformed frame");
    }
    if (g_hal.tx_acks + g_hal.tx_nacks != s_answered) {
        fail("not exactly one reply per answered frame");
    }
}

void fuzz_init(void) {
    fake_hal_reset(true);
    s_now = 0;
    s_answered = 0;
    (void)device_init(&s_dev, s_now);
}

unsigned long long fuzz_answered(void) {
    return s_answered;
}

/* The one-shot paths (what a host-side parser would do with the same bytes). */
static void one_shot(const uint8_t *bytes, size_t n) {
    size_t end = 0;
    while (end < n && bytes[end] != 0u) {
        end++;
    }
    uint8_t raw[PROTO_MAX_RAW];
    size_t len = 0;
    if (cobs_decode(bytes, end, raw, sizeof raw, &len) != COBS_RET_OK) {
        return;
    }
    proto_frame_t f;
    if (proto_parse(raw, len, &f) != PROTO_RET_OK) {
        return;
    }
    (void)proto_check_command(&f);
    proto_set_channel_t sc;
    proto_trigger_t tr;
    proto_status_t st;
    proto_hello_t he;
    if (f.payload_len > 0) {
        (void)proto_set_channel_unpack(f.payload, f.payload_len, &sc);
        (void)proto_trigger_unpack(f.payload, f.payload_len, &tr);
        (void)proto_status_unpack(f.payload, f.payload_len, &st);
        (void)proto_hello_unpack(f.payload, f.payload_len, &he);
    }
}

void fuzz_step(const uint8_t *bytes, size_t n, uint32_t advance_ms) {
    one_shot(bytes, n);
    g_hal.now_ms = s_now;
    s_answered += device_rx(&s_dev, bytes, n, s_now);
    check();
    if (advance_ms > 1000u) {
        advance_ms = 1000u;
    }
    for (uint32_t k = 0; k < advance_ms; k++) {
        s_now++;
        g_hal.now_ms = s_now;
        device_tick(&s_dev, s_now);
        check();
    }
}
