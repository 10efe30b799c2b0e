/* protocol.c - see protocol.h. */
#include "protocol.h"

#include "crc16.h"

void proto_put_u16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)(v >> 8);
}

void proto_put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)((v >> 8) & 0xFFu);
    p[2] = (uint8_t)((v >> 16) & 0xFFu);
    p[3] = (uint8_t)(v >> 24);
}

uint16_t proto_get_u16(const uint8_t *p) {
    return (uint16_t)((uint16_t)p[0] | (uint16_t)((uint16_t)p[1] << 8));
}

uint32_t proto_get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

proto_ret_t proto_parse(const uint8_t *raw, size_t len, proto_frame_t *out) {
    if (raw == NULL || out == NULL) {
        return PROTO_RET_ERR_BAD_ARG;
    }
    out->version = 0;
    out->seq = 0;
    out->cmd = 0;
    out->payload = NULL;
    out->payload_len = 0;
    if (len >= PROTO_HEADER_LEN) {
        out->version = raw[0];
        out->seq = proto_get_u16(&raw[1]);
        out->cmd = raw[3];
    }
    if (len < PROTO_MIN_RAW) {
        return PROTO_RET_ERR_SHORT;
    }
    if (len > PROTO_MAX_RAW) {
        return PROTO_RET_ERR_LONG;
    }
    const size_t body = len - PROTO_CRC_LEN;
    if (crc16_ccitt_false(raw, body) != proto_get_u16(&raw[body])) {
        return PROTO_RET_ERR_CRC;
    }
    if (raw[0] != PROTO_VERSION) {
        return PROTO_RET_ERR_VERSION;
    }
    out->payload = &raw[PROTO_HEADER_LEN];
    out->payload_len = body - PROTO_HEADER_LEN;
    return PROTO_RET_OK;
}

int proto_command_payload_len(uint8_t cmd) {
    switch (cmd) {
    case PROTO_CMD_HELLO:
    case PROTO_CMD_ARM:
    case PROTO_CMD_DISARM:
    case PROTO_CMD_HEARTBEAT:
    case PROTO_CMD_ESTOP:
    case PROTO_CMD_STATUS:
    case PROTO_CMD_CLEAR_FAULT:
        return 0;
    case PROTO_CMD_SET_CHANNEL:
        return (int)PROTO_SET_CHANNEL_LEN;
    case PROTO_CMD_STIM_ON:
    case PROTO_CMD_STIM_OFF:
        return 1;
    case PROTO_CMD_TRIGGER:
        return (int)PROTO_TRIGGER_LEN;
    default:
        return -1;
    }
}

proto_ret_t proto_check_command(const proto_frame_t *f) {
    if (f == NULL) {
        return PROTO_RET_ERR_BAD_ARG;
    }
    const int expected = proto_command_payload_len(f->cmd);
    if (expected < 0) {
        return PROTO_RET_ERR_UNKNOWN_CMD;
    }
    if (f->payload_len != (size_t)expected) {
        return PROTO_RET_ERR_PAYLOAD_LEN;
    }
    return PROTO_RET_OK;
}

proto_nack_t proto_nack_for(proto_ret_t r) {
    switch (r) {
    case PROTO_RET_OK:
        return PROTO_NACK_NONE;
    case PROTO_RET_ERR_CRC:
        return PROTO_NACK_BAD_CRC;
    case PROTO_RET_ERR_VERSION:
        return PROTO_NACK_BAD_VERSION;
    case PROTO_RET_ERR_UNKNOWN_CMD:
        return PROTO_NACK_UNKNOWN_CMD;
    case PROTO_RET_ERR_PAYLOAD_LEN:
        return PROTO_NACK_BAD_LENGTH;
    case PROTO_RET_ERR_BAD_ARG:
    case PROTO_RET_ERR_EXHAUSTED:
    case PROTO_RET_ERR_SHORT:
    case PROTO_RET_ERR_LONG:
    default:
        return PROTO_NACK_BAD_FRAMING;
    }
}

static bool frame_args_ok(const proto_frame_t *f, const uint8_t *out, const size_t *out_len) {
    return f != NULL && out != NULL && out_len != NULL && f->payload_len <= PROTO_MAX_PAYLOAD &&
           (f->payload != NULL || f->payload_len == 0);
}

static void put_header(const proto_frame_t *f, uint8_t hdr[PROTO_HEADER_LEN]) {
    hdr[0] = f->version;
    proto_put_u16(&hdr[1], f->seq);
    hdr[3] = f->cmd;
}

proto_ret_t proto_build_raw(const proto_frame_t *f, uint8_t *out, size_t cap, size_t *out_len) {
    if (!frame_args_ok(f, out, out_len)) {
        return PROTO_RET_ERR_BAD_ARG;
    }
    const size_t n = PROTO_HEADER_LEN + f->payload_len + PROTO_CRC_LEN;
    if (cap < n) {
        return PROTO_RET_ERR_EXHAUSTED;
    }
    put_header(f, out);
    for (size_t i = 0; i < f->payload_len; i++) {
        out[PROTO_HEADER_LEN + i] = f->payload[i];
    }
    const size_t body = PROTO_HEADER_LEN + f->payload_len;
    proto_put_u16(&out[body], crc16_ccitt_false(out, body));
    *out_len = n;
    return PROTO_RET_OK;
}

proto_ret_t proto_encode(const proto_frame_t *f, uint8_t *out, size_t cap, size_t *out_len) {
    if (!frame_args_ok(f, out, out_len)) {
        return PROTO_RET_ERR_BAD_ARG;
    }
    uint8_t hdr[PROTO_HEADER_LEN];
    uint8_t crc_le[PROTO_CRC_LEN];
    put_header(f, hdr);
    uint16_t crc = crc16_ccitt_false(hdr, sizeof hdr);
    crc = crc16_ccitt_update(crc, f->payload, f->payload_len);
    proto_put_u16(crc_le, crc);

    cobs_enc_t enc;
    cobs_ret_t r = cobs_enc_begin(&enc, out, cap);
    if (r == COBS_RET_OK) {
        r = cobs_enc_push(&enc, hdr, sizeof hdr);
    }
    if (r == COBS_RET_OK) {
        r = cobs_enc_push(&enc, f->payload, f->payload_len);
    }
    if (r == COBS_RET_OK) {
        r = cobs_enc_push(&enc, crc_le, sizeof crc_le);
    }
    if (r == COBS_RET_OK) {
        r = cobs_enc_end(&enc, true, out_len);
    }
    return r == COBS_RET_OK ? PROTO_RET_OK : PROTO_RET_ERR_EXHAUSTED;
}

proto_ret_t proto_set_channel_unpack(const uint8_t *p, size_t len, proto_set_channel_t *out) {
    if (p == NULL || out == NULL) {
        return PROTO_RET_ERR_BAD_ARG;
    }
    if (len != PROTO_SET_CHANNEL_LEN) {
        return PROTO_RET_ERR_PAYLOAD_LEN;
    }
    out->channel = p[0];
    out->pulse_width_us = proto_get_u16(&p[1]);
    out->current_ua = proto_get_u32(&p[3]);
    out->frequency_dhz = proto_get_u16(&p[7]);
    return PROTO_RET_OK;
}

void proto_set_channel_pack(const proto_set_channel_t *in, uint8_t *out) {
    out[0] = in->channel;
    proto_put_u16(&out[1], in->pulse_width_us);
    proto_put_u32(&out[3], in->current_ua);
    proto_put_u16(&out[7], in->frequency_dhz);
}

proto_ret_t proto_trigger_unpack(const uint8_t *p, size_t len, proto_trigger_t *out) {
    if (p == NULL || out == NULL) {
        return PROTO_RET_ERR_BAD_ARG;
    }
    if (len != PROTO_TRIGGER_LEN) {
        return PROTO_RET_ERR_PAYLOAD_LEN;
    }
    out->line = p[0];
    out->duration_ms = proto_get_u16(&p[1]);
    return PROTO_RET_OK;
}

void proto_trigger_pack(const proto_trigger_t *in, uint8_t *out) {
    out[0] = in->line;
    proto_put_u16(&out[1], in->duration_ms);
}

void proto_hello_pack(const proto_hello_t *in, uint8_t *out) {
    out[0] = in->protocol_version;
    out[1] = in->fw_major;
    out[2] = in->fw_minor;
    out[3] = in->n_channels;
    out[4] = in->n_triggers;
    proto_put_u32(&out[5], in->max_current_ua);
    proto_put_u16(&out[9], in->max_pulse_width_us);
    proto_put_u16(&out[11], in->max_frequency_dhz);
    proto_put_u32(&out[13], in->max_charge_nc);
    proto_put_u16(&out[17], in->ramp_ua_per_ms);
    proto_put_u16(&out[19], in->watchdog_ms);
    proto_put_u16(&out[21], in->max_trigger_ms);
}

proto_ret_t proto_hello_unpack(const uint8_t *p, size_t len, proto_hello_t *out) {
    if (p == NULL || out == NULL) {
        return PROTO_RET_ERR_BAD_ARG;
    }
    if (len != PROTO_HELLO_LEN) {
        return PROTO_RET_ERR_PAYLOAD_LEN;
    }
    out->protocol_version = p[0];
    out->fw_major = p[1];
    out->fw_minor = p[2];
    out->n_channels = p[3];
    out->n_triggers = p[4];
    out->max_current_ua = proto_get_u32(&p[5]);
    out->max_pulse_width_us = proto_get_u16(&p[9]);
    out->max_frequency_dhz = proto_get_u16(&p[11]);
    out->max_charge_nc = proto_get_u32(&p[13]);
    out->ramp_ua_per_ms = proto_get_u16(&p[17]);
    out->watchdog_ms = proto_get_u16(&p[19]);
    out->max_trigger_ms = proto_get_u16(&p[21]);
    return PROTO_RET_OK;
}

void proto_status_pack(const proto_status_t *in, uint8_t *out) {
    size_t o = 0;
    proto_put_u32(&out[o], in->t_ms);
    o += 4;
    out[o++] = in->fault;
    out[o++] = in->outputs;
    out[o++] = in->triggers;
    proto_put_u16(&out[o], in->heartbeat_age_ms);
    o += 2;
    proto_put_u32(&out[o], in->rx_ok);
    o += 4;
    for (size_t c = 0; c < PROTO_N_CHANNELS; c++) {
        const proto_channel_status_t *ch = &in->ch[c];
        proto_put_u32(&out[o], ch->target_ua);
        proto_put_u32(&out[o + 4], ch->applied_ua);
        proto_put_u16(&out[o + 8], ch->pulse_width_us);
        proto_put_u16(&out[o + 10], ch->frequency_dhz);
        out[o + 12] = ch->flags;
        o += 13;
    }
    for (size_t r = 0; r < PROTO_NACK_COUNT; r++) {
        proto_put_u32(&out[o], in->rejected[r]);
        o += 4;
    }
}

proto_ret_t proto_status_unpack(const uint8_t *p, size_t len, proto_status_t *out) {
    if (p == NULL || out == NULL) {
        return PROTO_RET_ERR_BAD_ARG;
    }
    if (len != PROTO_STATUS_LEN) {
        return PROTO_RET_ERR_PAYLOAD_LEN;
    }
    size_t o = 0;
    out->t_ms = proto_get_u32(&p[o]);
    o += 4;
    out->fault = p[o++];
    out->outputs = p[o++];
    out->triggers = p[o++];
    out->heartbeat_age_ms = proto_get_u16(&p[o]);
    o += 2;
    out->rx_ok = proto_get_u32(&p[o]);
    o += 4;
    for (size_t c = 0; c < PROTO_N_CHANNELS; c++) {
        proto_channel_status_t *ch = &out->ch[c];
        ch->target_ua = proto_get_u32(&p[o]);
        ch->applied_ua = proto_get_u32(&p[o + 4]);
        ch->pulse_width_us = proto_get_u16(&p[o + 8]);
        ch->frequency_dhz = proto_get_u16(&p[o + 10]);
        ch->flags = p[o + 12];
        o += 13;
    }
    for (size_t r = 0; r < PROTO_NACK_COUNT; r++) {
        out->rejected[r] = proto_get_u32(&p[o]);
        o += 4;
    }
    return PROTO_RET_OK;
}

proto_ret_t proto_rx_init(proto_rx_t *rx) {
    if (rx == NULL) {
        return PROTO_RET_ERR_BAD_ARG;
    }
    return cobs_decoder_init(&rx->cobs, rx->buf, sizeof rx->buf) == COBS_RET_OK ? PROTO_RET_OK
                                                                                 : PROTO_RET_ERR_BAD_ARG;
}
