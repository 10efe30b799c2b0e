/* hal_fake.c - see hal_fake.h. */
#include "hal_fake.h"

#include <string.h>

fake_hal_t g_hal;

void fake_hal_reset(bool verify) {
    memset(&g_hal, 0, sizeof g_hal);
    g_hal.verify = verify;
    (void)cobs_decoder_init(&g_hal.vdec, g_hal.vbuf, sizeof g_hal.vbuf);
}

uint32_t hal_millis(void) {
    return g_hal.now_ms;
}

void hal_output_set(uint8_t channel, const hal_output_t *out) {
    g_hal.set_calls++;
    if (channel >= DEV_N_CHANNELS || out == NULL) {
        g_hal.violations++;
        return;
    }
    if (out->current_ua > DEV_MAX_CURRENT_UA || out->pulse_width_us > DEV_MAX_PULSE_WIDTH_US ||
        out->frequency_dhz == 0u || out->frequency_dhz > DEV_MAX_FREQUENCY_DHZ ||
        (uint64_t)out->current_ua * out->pulse_width_us > (uint64_t)DEV_MAX_CHARGE_NC * 1000u) {
        g_hal.violations++;
    }
    if (g_hal.on[channel] && out->current_ua > g_hal.out[channel].current_ua) {
        /* a rise of more than one ramp step per call is a ramp violation (the device calls the
           HAL at most once per channel per tick) */
        if (out->current_ua - g_hal.out[channel].current_ua > DEV_RAMP_UA_PER_MS) {
            g_hal.violations++;
        }
    } else if (!g_hal.on[channel]) {
        if (out->current_ua > DEV_RAMP_UA_PER_MS) {
            g_hal.violations++; /* switching on must start from (near) zero */
        }
        g_hal.on_since_ms[channel] = g_hal.now_ms;
    }
    g_hal.out[channel] = *out;
    g_hal.on[channel] = true;
}

void hal_output_off(uint8_t channel) {
    g_hal.off_calls++;
    if (channel >= DEV_N_CHANNELS) {
        g_hal.violations++;
        return;
    }
    g_hal.on[channel] = false;
    g_hal.out[channel].current_ua = 0;
    g_hal.off_at_ms[channel] = g_hal.now_ms;
}

void hal_trigger_write(uint8_t line, bool high) {
    g_hal.trig_calls++;
    if (line >= DEV_N_TRIGGERS) {
        g_hal.violations++;
        return;
    }
    g_hal.trig[line] = high;
}

static void verify_byte(uint8_t b) {
    const cobs_dec_t r = cobs_decoder_push(&g_hal.vdec, b);
    if (r == COBS_DEC_MORE) {
        return;
    }
    g_hal.tx_frames++;
    if (r != COBS_DEC_FRAME) {
        g_hal.tx_bad_frames++;
        return;
    }
    proto_frame_t f;
    if (proto_parse(g_hal.vbuf, cobs_decoder_frame_len(&g_hal.vdec), &f) != PROTO_RET_OK) {
        g_hal.tx_bad_frames++;
        return;
    }
    switch (f.cmd) {
    case PROTO_REPLY_ACK:
        g_hal.tx_acks++;
        if (f.payload_len < PROTO_ACK_HEADER_LEN) {
            g_hal.tx_bad_frames++;
        }
        break;
    case PROTO_REPLY_NACK:
        g_hal.tx_nacks++;
        if (f.payload_len != PROTO_NACK_LEN || f.payload[1] == 0u || f.payload[1] > PROTO_NACK_COUNT) {
            g_hal.tx_bad_frames++;
        } else {
            g_hal.nack_by_reason[f.payload[1]]++;
        }
        break;
    case PROTO_REPLY_EVENT:
        g_hal.tx_events++;
        if (f.payload_len != PROTO_EVENT_LEN) {
            g_hal.tx_bad_frames++;
        }
        break;
    default:
        g_hal.tx_bad_frames++;
        break;
    }
}

void hal_uart_write(const uint8_t *data, size_t len) {
    if (data == NULL) {
        return;
    }
    if (g_hal.verify) {
        for (size_t i = 0; i < len; i++) {
            verify_byte(data[i]);
        }
        return;
    }
    if (g_hal.tx_len + len > FAKE_TX_CAP) {
        g_hal.tx_overflow = true;
        return;
    }
    memcpy(&g_hal.tx[g_hal.tx_len], data, len);
    g_hal.tx_len += len;
}

void fake_tx_clear(void) {
    g_hal.tx_len = 0;
    g_hal.tx_read = 0;
}

int fake_next_frame(uint8_t *raw, proto_frame_t *f) {
    size_t end = g_hal.tx_read;
    while (end < g_hal.tx_len && g_hal.tx[end] != 0u) {
        end++;
    }
    if (end >= g_hal.tx_len) {
        return 0;
    }
    size_t n = 0;
    const cobs_ret_t cr = cobs_decode(&g_hal.tx[g_hal.tx_read], end - g_hal.tx_read, raw, PROTO_MAX_RAW, &n);
    g_hal.tx_read = end + 1u;
    if (cr != COBS_RET_OK) {
        return -1;
    }
    return proto_parse(raw, n, f) == PROTO_RET_OK ? 1 : -1;
}
