/* device.c - see device.h. */
#include "device.h"

#include "hal.h"

/* ---- small helpers ---- */

static uint32_t sat_inc(uint32_t v) {
    return v == UINT32_MAX ? v : v + 1u;
}

static uint8_t output_mask(const device_t *d) {
    uint8_t m = 0;
    for (uint8_t c = 0; c < DEV_N_CHANNELS; c++) {
        if (d->ch[c].on) {
            m = (uint8_t)(m | (1u << c));
        }
    }
    return m;
}

static const uint8_t k_valid_channel_mask = (uint8_t)((1u << DEV_N_CHANNELS) - 1u);

/* Bring the HAL in line with the channel and trigger state; touch only what changed. */
static void sync_outputs(device_t *d) {
    for (uint8_t c = 0; c < DEV_N_CHANNELS; c++) {
        const device_channel_t *ch = &d->ch[c];
        device_hal_shadow_t *sh = &d->hal_ch[c];
        if (!ch->on) {
            if (sh->on) {
                hal_output_off(c);
                sh->on = false;
                sh->current_ua = 0;
            }
            continue;
        }
        if (!sh->on || sh->current_ua != ch->applied_ua || sh->pulse_width_us != ch->pulse_width_us ||
            sh->frequency_dhz != ch->frequency_dhz) {
            const hal_output_t out = {ch->applied_ua, ch->pulse_width_us, ch->frequency_dhz};
            hal_output_set(c, &out);
            sh->on = true;
            sh->current_ua = ch->applied_ua;
            sh->pulse_width_us = ch->pulse_width_us;
            sh->frequency_dhz = ch->frequency_dhz;
        }
    }
    const uint8_t changed = (uint8_t)(d->triggers ^ d->hal_triggers);
    for (uint8_t t = 0; t < DEV_N_TRIGGERS; t++) {
        if ((changed & (1u << t)) != 0u) {
            hal_trigger_write(t, (d->triggers & (1u << t)) != 0u);
        }
    }
    d->hal_triggers = d->triggers;
}

static void send_frame(device_t *d, uint16_t seq, uint8_t cmd, const uint8_t *payload, size_t len) {
    const proto_frame_t f = {PROTO_VERSION, seq, cmd, payload, len};
    size_t n = 0;
    if (proto_encode(&f, d->tx, sizeof d->tx, &n) == PROTO_RET_OK) {
        hal_uart_write(d->tx, n);
    }
}

/* Send an EVENT if the state, fault, outputs or triggers changed since the last one. */
static void emit_event_if_changed(device_t *d) {
    const uint8_t outputs = output_mask(d);
    uint8_t changed = 0;
    if (d->state != d->evt_state) {
        changed |= PROTO_EVT_STATE;
    }
    if (d->fault != d->evt_fault) {
        changed |= PROTO_EVT_FAULT;
    }
    if (outputs != d->evt_outputs) {
        changed |= PROTO_EVT_OUTPUTS;
    }
    if (d->triggers != d->evt_triggers) {
        changed |= PROTO_EVT_TRIGGERS;
    }
    if (changed == 0u) {
        return;
    }
    uint8_t p[PROTO_EVENT_LEN];
    proto_put_u32(&p[0], d->now_ms);
    p[4] = changed;
    p[5] = (uint8_t)d->state;
    p[6] = (uint8_t)d->fault;
    p[7] = outputs;
    p[8] = d->triggers;
    send_frame(d, d->event_seq, PROTO_REPLY_EVENT, p, sizeof p);
    d->event_seq++;
    d->evt_state = d->state;
    d->evt_fault = d->fault;
    d->evt_outputs = outputs;
    d->evt_triggers = d->triggers;
}

static void all_off(device_t *d) {
    for (uint8_t c = 0; c < DEV_N_CHANNELS; c++) {
        d->ch[c].on = false;
        d->ch[c].applied_ua = 0;
    }
    d->triggers = 0;
}

static void enter_fault(device_t *d, proto_fault_t cause) {
    all_off(d);
    sync_outputs(d); /* outputs off now, before anything else */
    d->state = PROTO_STATE_FAULT;
    d->fault = cause;
}

static void check_watchdog(device_t *d) {
    if ((d->state == PROTO_STATE_ARMED || d->state == PROTO_STATE_STIMULATING) &&
        (uint32_t)(d->now_ms - d->last_heartbeat_ms) >= DEV_WATCHDOG_MS) {
        enter_fault(d, PROTO_FAULT_WATCHDOG);
    }
}

/* ---- public API ---- */

device_ret_t device_init(device_t *d, uint32_t now_ms) {
    if (d == NULL) {
        return DEVICE_RET_ERR_BAD_ARG;
    }
    d->state = PROTO_STATE_DISARMED;
    d->fault = PROTO_FAULT_NONE;
    for (uint8_t c = 0; c < DEV_N_CHANNELS; c++) {
        d->ch[c] = (device_channel_t){0, 0, 0, 0, false, false};
        d->hal_ch[c] = (device_hal_shadow_t){false, 0, 0, 0};
        hal_output_off(c); /* whatever the hardware did before, it is off now */
    }
    d->triggers = 0;
    d->hal_triggers = 0;
    for (uint8_t t = 0; t < DEV_N_TRIGGERS; t++) {
        d->trigger_until[t] = 0;
        hal_trigger_write(t, false);
    }
    d->now_ms = now_ms;
    d->last_heartbeat_ms = now_ms;
    d->heartbeat_seen = false;
    d->last_ramp_ms = now_ms;
    d->last_seq = 0;
    d->seq_valid = false;
    d->event_seq = 0;
    d->evt_state = d->state;
    d->evt_fault = d->fault;
    d->evt_outputs = 0;
    d->evt_triggers = 0;
    d->rx_ok = 0;
    for (size_t r = 0; r < PROTO_NACK_COUNT; r++) {
        d->rejected[r] = 0;
    }
    (void)proto_rx_init(&d->rx);
    return DEVICE_RET_OK;
}

proto_nack_t device_check_channel(const proto_set_channel_t *c, uint8_t *detail) {
    uint8_t dummy = 0;
    uint8_t *det = detail != NULL ? detail : &dummy;
    *det = PROTO_FIELD_NONE;
    if (c == NULL) {
        return PROTO_NACK_BAD_ARG;
    }
    if (c->channel >= DEV_N_CHANNELS) {
        *det = PROTO_FIELD_CHANNEL;
        return PROTO_NACK_BAD_ARG;
    }
    if (c->current_ua > DEV_MAX_CURRENT_UA) {
        *det = PROTO_FIELD_CURRENT;
        return PROTO_NACK_LIMIT;
    }
    if (c->pulse_width_us > DEV_MAX_PULSE_WIDTH_US) {
        *det = PROTO_FIELD_PULSE_WIDTH;
        return PROTO_NACK_LIMIT;
    }
    if (c->frequency_dhz == 0u) {
        *det = PROTO_FIELD_FREQUENCY;
        return PROTO_NACK_BAD_ARG;
    }
    if (c->frequency_dhz > DEV_MAX_FREQUENCY_DHZ) {
        *det = PROTO_FIELD_FREQUENCY;
        return PROTO_NACK_LIMIT;
    }
    /* uA x us = pC; both factors are already bounded, so the product fits in 32 bits. */
    const uint32_t charge_pc = c->current_ua * (uint32_t)c->pulse_width_us;
    if (charge_pc > DEV_MAX_CHARGE_NC * 1000u) {
        *det = PROTO_FIELD_CHARGE;
        return PROTO_NACK_LIMIT;
    }
    return PROTO_NACK_NONE;
}

_Static_assert((uint64_t)DEV_MAX_CURRENT_UA * DEV_MAX_PULSE_WIDTH_US <= UINT32_MAX, "charge fits u32");

void device_hello(proto_hello_t *out) {
    out->protocol_version = PROTO_VERSION;
    out->fw_major = DEV_FW_MAJOR;
    out->fw_minor = DEV_FW_MINOR;
    out->n_channels = DEV_N_CHANNELS;
    out->n_triggers = DEV_N_TRIGGERS;
    out->max_current_ua = DEV_MAX_CURRENT_UA;
    out->max_pulse_width_us = DEV_MAX_PULSE_WIDTH_US;
    out->max_frequency_dhz = DEV_MAX_FREQUENCY_DHZ;
    out->max_charge_nc = DEV_MAX_CHARGE_NC;
    out->ramp_ua_per_ms = DEV_RAMP_UA_PER_MS;
    out->watchdog_ms = DEV_WATCHDOG_MS;
    out->max_trigger_ms = DEV_MAX_TRIGGER_MS;
}

void device_status(const device_t *d, proto_status_t *out) {
    out->t_ms = d->now_ms;
    out->fault = (uint8_t)d->fault;
    out->outputs = output_mask(d);
    out->triggers = d->triggers;
    const uint32_t age = (uint32_t)(d->now_ms - d->last_heartbeat_ms);
    out->heartbeat_age_ms = (!d->heartbeat_seen || age > 0xFFFFu) ? 0xFFFFu : (uint16_t)age;
    out->rx_ok = d->rx_ok;
    for (size_t c = 0; c < PROTO_N_CHANNELS; c++) {
        const device_channel_t *ch = &d->ch[c];
        out->ch[c].target_ua = ch->target_ua;
        out->ch[c].applied_ua = ch->applied_ua;
        out->ch[c].pulse_width_us = ch->pulse_width_us;
        out->ch[c].frequency_dhz = ch->frequency_dhz;
        out->ch[c].flags = (uint8_t)((ch->configured ? PROTO_CH_CONFIGURED : 0u) | (ch->on ? PROTO_CH_ON : 0u));
    }
    for (size_t r = 0; r < PROTO_NACK_COUNT; r++) {
        out->rejected[r] = d->rejected[r];
    }
}

/* Outcome of one command: ACK (status + data) or NACK (reason + detail). */
typedef struct {
    proto_nack_t nack;
    uint8_t detail;
    proto_ack_t status;
    uint8_t data[PROTO_MAX_PAYLOAD - PROTO_ACK_HEADER_LEN];
    size_t data_len;
} outcome_t;

static void cmd_set_channel(device_t *d, const proto_frame_t *f, outcome_t *o) {
    proto_set_channel_t c;
    (void)proto_set_channel_unpack(f->payload, f->payload_len, &c); /* length checked earlier */
    if (d->state == PROTO_STATE_FAULT) {
        o->nack = PROTO_NACK_FAULT_LATCHED;
        o->detail = (uint8_t)d->fault;
        return;
    }
    o->nack = device_check_channel(&c, &o->detail);
    if (o->nack != PROTO_NACK_NONE) {
        return; /* all-or-nothing: a refused setting changes nothing */
    }
    device_channel_t *ch = &d->ch[c.channel];
    ch->target_ua = c.current_ua;
    ch->pulse_width_us = c.pulse_width_us;
    ch->frequency_dhz = c.frequency_dhz;
    ch->configured = true;
    if (ch->applied_ua > ch->target_ua) {
        ch->applied_ua = ch->target_ua; /* decreases apply at once; increases ramp in device_tick */
    }
}

/* Refuse (NACK FAULT_LATCHED with the fault as detail, or NOT_ARMED) unless the device is armed or stimulating.
 * Returns true when the command may proceed. */
static bool require_armed(const device_t *d, outcome_t *o) {
    if (d->state == PROTO_STATE_FAULT) {
        o->nack = PROTO_NACK_FAULT_LATCHED;
        o->detail = (uint8_t)d->fault;
        return false;
    }
    if (d->state == PROTO_STATE_DISARMED) {
        o->nack = PROTO_NACK_NOT_ARMED;
        return false;
    }
    return true;
}

static void cmd_stim_on(device_t *d, const proto_frame_t *f, outcome_t *o) {
    const uint8_t mask = f->payload[0];
    if (!require_armed(d, o)) {
        return;
    }
    if (mask == 0u || (mask & (uint8_t)~k_valid_channel_mask) != 0u) {
        o->nack = PROTO_NACK_BAD_ARG;
        o->detail = PROTO_FIELD_CHANNEL_MASK;
        return;
    }
    for (uint8_t c = 0; c < DEV_N_CHANNELS; c++) {
        if ((mask & (1u << c)) != 0u && !d->ch[c].configured) {
            o->nack = PROTO_NACK_NOT_CONFIGURED;
            o->detail = c;
            return;
        }
    }
    bool any = false;
    for (uint8_t c = 0; c < DEV_N_CHANNELS; c++) {
        if ((mask & (1u << c)) != 0u && !d->ch[c].on) {
            d->ch[c].on = true;
            d->ch[c].applied_ua = 0; /* ramp up from zero */
            any = true;
        }
    }
    d->state = PROTO_STATE_STIMULATING;
    o->status = any ? PROTO_ACK_OK : PROTO_ACK_NO_CHANGE;
}

static void cmd_stim_off(device_t *d, const proto_frame_t *f, outcome_t *o) {
    const uint8_t mask = f->payload[0]; /* bits of absent channels are ignored: off is always safe */
    bool any = false;
    for (uint8_t c = 0; c < DEV_N_CHANNELS; c++) {
        if ((mask & (1u << c)) != 0u && d->ch[c].on) {
            d->ch[c].on = false;
            d->ch[c].applied_ua = 0;
            any = true;
        }
    }
    if (d->state == PROTO_STATE_STIMULATING && output_mask(d) == 0u) {
        d->state = PROTO_STATE_ARMED;
    }
    o->status = any ? PROTO_ACK_OK : PROTO_ACK_NO_CHANGE;
}

static void cmd_trigger(device_t *d, const proto_frame_t *f, outcome_t *o) {
    proto_trigger_t t;
    (void)proto_trigger_unpack(f->payload, f->payload_len, &t);
    if (!require_armed(d, o)) {
        return;
    }
    if (t.line >= DEV_N_TRIGGERS) {
        o->nack = PROTO_NACK_BAD_ARG;
        o->detail = PROTO_FIELD_TRIGGER_LINE;
        return;
    }
    if (t.duration_ms == 0u) {
        o->nack = PROTO_NACK_BAD_ARG;
        o->detail = PROTO_FIELD_DURATION;
        return;
    }
    if (t.duration_ms > DEV_MAX_TRIGGER_MS) {
        o->nack = PROTO_NACK_LIMIT;
        o->detail = PROTO_FIELD_DURATION;
        return;
    }
    d->triggers = (uint8_t)(d->triggers | (1u << t.line));
    d->trigger_until[t.line] = d->now_ms + t.duration_ms;
}

static void dispatch(device_t *d, const proto_frame_t *f, outcome_t *o) {
    switch ((proto_cmd_t)f->cmd) {
    case PROTO_CMD_HELLO: {
        proto_hello_t h;
        device_hello(&h);
        proto_hello_pack(&h, o->data);
        o->data_len = PROTO_HELLO_LEN;
        break;
    }
    case PROTO_CMD_ARM:
        if (d->state == PROTO_STATE_FAULT) {
            o->nack = PROTO_NACK_FAULT_LATCHED;
            o->detail = (uint8_t)d->fault;
        } else if (d->state == PROTO_STATE_DISARMED) {
            d->state = PROTO_STATE_ARMED;
            d->last_heartbeat_ms = d->now_ms; /* the watch starts now */
            d->heartbeat_seen = true;
        } else {
            o->status = PROTO_ACK_NO_CHANGE;
        }
        break;
    case PROTO_CMD_DISARM:
        if (d->state == PROTO_STATE_ARMED || d->state == PROTO_STATE_STIMULATING) {
            all_off(d);
            d->state = PROTO_STATE_DISARMED;
        } else {
            o->status = PROTO_ACK_NO_CHANGE; /* DISARMED already, or FAULT (which only CLEAR_FAULT leaves) */
        }
        break;
    case PROTO_CMD_SET_CHANNEL:
        cmd_set_channel(d, f, o);
        break;
    case PROTO_CMD_STIM_ON:
        cmd_stim_on(d, f, o);
        break;
    case PROTO_CMD_STIM_OFF:
        cmd_stim_off(d, f, o);
        break;
    case PROTO_CMD_HEARTBEAT:
        d->last_heartbeat_ms = d->now_ms;
        d->heartbeat_seen = true;
        proto_put_u32(o->data, d->now_ms);
        o->data_len = 4;
        break;
    case PROTO_CMD_ESTOP:
        if (d->state == PROTO_STATE_FAULT) {
            o->status = PROTO_ACK_NO_CHANGE; /* the first cause stays latched */
        } else {
            enter_fault(d, PROTO_FAULT_ESTOP);
        }
        break;
    case PROTO_CMD_STATUS: {
        proto_status_t s;
        device_status(d, &s);
        proto_status_pack(&s, o->data);
        o->data_len = PROTO_STATUS_LEN;
        break;
    }
    case PROTO_CMD_TRIGGER:
        cmd_trigger(d, f, o);
        break;
    case PROTO_CMD_CLEAR_FAULT:
        if (d->state == PROTO_STATE_FAULT) {
            d->state = PROTO_STATE_DISARMED;
            d->fault = PROTO_FAULT_NONE;
        } else {
            o->status = PROTO_ACK_NO_CHANGE;
        }
        break;
    case PROTO_REPLY_ACK:
    case PROTO_REPLY_NACK:
    case PROTO_REPLY_EVENT:
    default:
        o->nack = PROTO_NACK_UNKNOWN_CMD; /* unreachable: proto_check_command ran first */
        break;
    }
}

static proto_nack_t send_nack(device_t *d, uint16_t seq, uint8_t cmd, proto_nack_t reason, uint8_t detail) {
    d->rejected[(size_t)reason - 1u] = sat_inc(d->rejected[(size_t)reason - 1u]);
    const uint8_t p[PROTO_NACK_LEN] = {cmd, (uint8_t)reason, detail, (uint8_t)d->state};
    send_frame(d, seq, PROTO_REPLY_NACK, p, sizeof p);
    return reason;
}

static void advance_time(device_t *d, uint32_t now_ms) {
    d->now_ms = now_ms;
    check_watchdog(d);
}

proto_nack_t device_handle_raw(device_t *d, const uint8_t *raw, size_t len, uint32_t now_ms) {
    if (d == NULL) {
        return PROTO_NACK_BAD_FRAMING;
    }
    advance_time(d, now_ms);
    sync_outputs(d);
    emit_event_if_changed(d); /* a watchdog trip found here is reported before the reply */
    if (raw == NULL) {
        return send_nack(d, 0, 0, PROTO_NACK_BAD_FRAMING, 0);
    }
    proto_frame_t f;
    proto_ret_t r = proto_parse(raw, len, &f);
    if (r == PROTO_RET_OK) {
        r = proto_check_command(&f);
    }
    if (r != PROTO_RET_OK) {
        uint8_t detail = 0;
        if (r == PROTO_RET_ERR_VERSION) {
            detail = f.version;
        } else if (r == PROTO_RET_ERR_PAYLOAD_LEN) {
            detail = f.payload_len > 0xFFu ? 0xFFu : (uint8_t)f.payload_len;
        }
        return send_nack(d, f.seq, f.cmd, proto_nack_for(r), detail);
    }
    if (f.cmd != PROTO_CMD_HELLO && d->seq_valid) {
        const uint16_t delta = (uint16_t)(f.seq - d->last_seq);
        if (delta == 0u || delta >= 0x8000u) {
            return send_nack(d, f.seq, f.cmd, PROTO_NACK_SEQUENCE, 0);
        }
    }
    d->last_seq = f.seq;
    d->seq_valid = true;

    outcome_t o;
    o.nack = PROTO_NACK_NONE;
    o.detail = 0;
    o.status = PROTO_ACK_OK;
    o.data_len = 0;
    dispatch(d, &f, &o);
    sync_outputs(d);
    emit_event_if_changed(d);
    if (o.nack != PROTO_NACK_NONE) {
        return send_nack(d, f.seq, f.cmd, o.nack, o.detail);
    }
    d->rx_ok = sat_inc(d->rx_ok);
    uint8_t p[PROTO_MAX_PAYLOAD];
    p[0] = f.cmd;
    p[1] = (uint8_t)o.status;
    p[2] = (uint8_t)d->state;
    for (size_t i = 0; i < o.data_len; i++) {
        p[PROTO_ACK_HEADER_LEN + i] = o.data[i];
    }
    send_frame(d, f.seq, PROTO_REPLY_ACK, p, PROTO_ACK_HEADER_LEN + o.data_len);
    return PROTO_NACK_NONE;
}

size_t device_rx(device_t *d, const uint8_t *bytes, size_t n, uint32_t now_ms) {
    if (d == NULL || bytes == NULL) {
        return 0;
    }
    size_t answered = 0;
    for (size_t i = 0; i < n; i++) {
        switch (cobs_decoder_push(&d->rx.cobs, bytes[i])) {
        case COBS_DEC_FRAME:
            (void)device_handle_raw(d, d->rx.buf, cobs_decoder_frame_len(&d->rx.cobs), now_ms);
            answered++;
            break;
        case COBS_DEC_ERR_OVERFLOW:
        case COBS_DEC_ERR_MALFORMED:
            advance_time(d, now_ms);
            sync_outputs(d);
            emit_event_if_changed(d);
            (void)send_nack(d, 0, 0, PROTO_NACK_BAD_FRAMING, 0);
            answered++;
            break;
        case COBS_DEC_MORE:
        default:
            break;
        }
    }
    return answered;
}

void device_tick(device_t *d, uint32_t now_ms) {
    if (d == NULL) {
        return;
    }
    advance_time(d, now_ms);
    if (d->now_ms != d->last_ramp_ms) {
        d->last_ramp_ms = d->now_ms;
        for (uint8_t c = 0; c < DEV_N_CHANNELS; c++) {
            device_channel_t *ch = &d->ch[c];
            if (ch->on && ch->applied_ua < ch->target_ua) {
                const uint32_t gap = ch->target_ua - ch->applied_ua;
                ch->applied_ua += gap < DEV_RAMP_UA_PER_MS ? gap : DEV_RAMP_UA_PER_MS;
            }
        }
    }
    for (uint8_t t = 0; t < DEV_N_TRIGGERS; t++) {
        /* wrap-safe "now >= until": the difference is below 2^31 once the deadline has passed */
        if ((d->triggers & (1u << t)) != 0u && (uint32_t)(d->now_ms - d->trigger_until[t]) < 0x80000000u) {
            d->triggers = (uint8_t)(d->triggers & ~(1u << t));
        }
    }
    sync_outputs(d);
    emit_event_if_changed(d);
}

bool device_invariants_ok(const device_t *d) {
    if (d == NULL) {
        return false;
    }
    if ((d->state == PROTO_STATE_FAULT) != (d->fault != PROTO_FAULT_NONE)) {
        return false;
    }
    for (uint8_t c = 0; c < DEV_N_CHANNELS; c++) {
        const device_channel_t *ch = &d->ch[c];
        const device_hal_shadow_t *sh = &d->hal_ch[c];
        if (ch->target_ua > DEV_MAX_CURRENT_UA || ch->applied_ua > ch->target_ua ||
            ch->pulse_width_us > DEV_MAX_PULSE_WIDTH_US || ch->frequency_dhz > DEV_MAX_FREQUENCY_DHZ ||
            ch->target_ua * (uint32_t)ch->pulse_width_us > DEV_MAX_CHARGE_NC * 1000u) {
            return false;
        }
        if (ch->on && (d->state != PROTO_STATE_STIMULATING || !ch->configured || ch->frequency_dhz == 0u)) {
            return false;
        }
        if (sh->on != ch->on || (ch->on && sh->current_ua != ch->applied_ua)) {
            return false;
        }
    }
    if (d->state == PROTO_STATE_STIMULATING && output_mask(d) == 0u) {
        return false;
    }
    if (d->triggers != 0u && d->state != PROTO_STATE_ARMED && d->state != PROTO_STATE_STIMULATING) {
        return false;
    }
    return d->hal_triggers == d->triggers;
}
