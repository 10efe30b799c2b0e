/*
 * protocol.h - wire protocol of the stimulator interface box (host <-> device over a UART).
 *
 * A frame on the wire is COBS(raw) followed by one 0x00 delimiter, where raw is
 *
 *     version u8 | seq u16 LE | cmd u8 | payload (0..PROTO_MAX_PAYLOAD bytes) | crc u16 LE
 *
 * and crc is CRC-16/CCITT-FALSE over every raw byte before it. All multi-byte fields are
 * little-endian. Units: current in microamperes (uA, u32), pulse width in microseconds (us, u16),
 * frequency in decihertz (0.1 Hz, u16), durations and timestamps in milliseconds (ms).
 *
 * Commands (host -> device) and their payloads:
 *
 *   0x01 HELLO        -                                    (resets the sequence window)
 *   0x02 ARM          -
 *   0x03 DISARM       -
 *   0x04 SET_CHANNEL  channel u8 | pulse_width_us u16 | current_ua u32 | frequency_dhz u16
 *   0x05 STIM_ON      channel_mask u8
 *   0x06 STIM_OFF     channel_mask u8
 *   0x07 HEARTBEAT    -
 *   0x08 ESTOP        -
 *   0x09 STATUS       -
 *   0x0A TRIGGER      line u8 | duration_ms u16
 *   0x0B CLEAR_FAULT  -
 *
 * Replies (device -> host). Every command gets exactly one ACK or NACK carrying the command's seq;
 * EVENT frames are unsolicited and carry the device's own event counter as seq:
 *
 *   0x80 ACK    req_cmd u8 | status u8 (proto_ack_t) | state u8 | data (per command, below)
 *   0x81 NACK   req_cmd u8 | reason u8 (proto_nack_t) | detail u8 | state u8
 *   0x82 EVENT  t_ms u32 | changed u8 (PROTO_EVT_*) | state u8 | fault u8 | outputs u8 | triggers u8
 *
 * ACK data: HELLO -> proto_hello_t (PROTO_HELLO_LEN bytes), HEARTBEAT -> t_ms u32 (device time the
 * heartbeat was taken), STATUS -> proto_status_t (PROTO_STATUS_LEN bytes), others -> none.
 *
 * Pure C11, freestanding, no allocation; every buffer is caller-owned.
 */
#ifndef STIMBOX_PROTOCOL_H
#define STIMBOX_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cobs.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PROTO_VERSION 1u
#define PROTO_HEADER_LEN 4u
#define PROTO_CRC_LEN 2u
#define PROTO_MAX_PAYLOAD 128u
#define PROTO_MIN_RAW (PROTO_HEADER_LEN + PROTO_CRC_LEN)
#define PROTO_MAX_RAW (PROTO_HEADER_LEN + PROTO_MAX_PAYLOAD + PROTO_CRC_LEN)
/** Largest frame on the wire, delimiter included. */
#define PROTO_MAX_WIRE (COBS_ENCODE_MAX(PROTO_MAX_RAW) + 1u)

/** Channels and trigger lines the protocol can address (bit masks are u8). */
#define PROTO_N_CHANNELS 4u
#define PROTO_N_TRIGGERS 2u

/** Command and reply codes (the cmd byte). */
typedef enum {
    PROTO_CMD_HELLO = 0x01,
    PROTO_CMD_ARM = 0x02,
    PROTO_CMD_DISARM = 0x03,
    PROTO_CMD_SET_CHANNEL = 0x04,
    PROTO_CMD_STIM_ON = 0x05,
    PROTO_CMD_STIM_OFF = 0x06,
    PROTO_CMD_HEARTBEAT = 0x07,
    PROTO_CMD_ESTOP = 0x08,
    PROTO_CMD_STATUS = 0x09,
    PROTO_CMD_TRIGGER = 0x0A,
    PROTO_CMD_CLEAR_FAULT = 0x0B,
    PROTO_REPLY_ACK = 0x80,
    PROTO_REPLY_NACK = 0x81,
    PROTO_REPLY_EVENT = 0x82
} proto_cmd_t;

/** ACK status byte. */
typedef enum {
    PROTO_ACK_OK = 0,       /**< the command took effect */
    PROTO_ACK_NO_CHANGE = 1 /**< accepted, but the device already was in the requested state */
} proto_ack_t;

/** NACK reason byte; also the index (reason - 1) of the device's rejection counters. */
typedef enum {
    PROTO_NACK_NONE = 0,           /**< not a NACK (used as "accepted" by device functions) */
    PROTO_NACK_BAD_FRAMING = 1,    /**< COBS malformed, frame too long or shorter than header+CRC */
    PROTO_NACK_BAD_CRC = 2,        /**< CRC mismatch (seq/cmd echoed as received, untrusted) */
    PROTO_NACK_BAD_VERSION = 3,    /**< version byte != PROTO_VERSION; detail = received version */
    PROTO_NACK_UNKNOWN_CMD = 4,    /**< cmd is not a command code */
    PROTO_NACK_BAD_LENGTH = 5,     /**< payload length wrong for cmd; detail = received length */
    PROTO_NACK_SEQUENCE = 6,       /**< seq repeats or is behind the last accepted one */
    PROTO_NACK_BAD_ARG = 7,        /**< a field is invalid; detail = proto_field_t */
    PROTO_NACK_LIMIT = 8,          /**< a hard limit would be exceeded; detail = proto_field_t */
    PROTO_NACK_NOT_ARMED = 9,      /**< STIM_ON / TRIGGER while disarmed */
    PROTO_NACK_FAULT_LATCHED = 10, /**< a fault is latched; detail = proto_fault_t */
    PROTO_NACK_NOT_CONFIGURED = 11 /**< STIM_ON on a channel never set; detail = channel */
} proto_nack_t;
#define PROTO_NACK_COUNT 11u

/** NACK detail for BAD_ARG and LIMIT: which field. */
typedef enum {
    PROTO_FIELD_NONE = 0,
    PROTO_FIELD_CHANNEL = 1,
    PROTO_FIELD_PULSE_WIDTH = 2,
    PROTO_FIELD_CURRENT = 3,
    PROTO_FIELD_FREQUENCY = 4,
    PROTO_FIELD_CHARGE = 5,
    PROTO_FIELD_CHANNEL_MASK = 6,
    PROTO_FIELD_TRIGGER_LINE = 7,
    PROTO_FIELD_DURATION = 8
} proto_field_t;

/** Device state byte. */
typedef enum {
    PROTO_STATE_DISARMED = 0,
    PROTO_STATE_ARMED = 1,
    PROTO_STATE_STIMULATING = 2,
    PROTO_STATE_FAULT = 3
} proto_state_t;

/** Fault cause byte. */
typedef enum {
    PROTO_FAULT_NONE = 0,
    PROTO_FAULT_ESTOP = 1,
    PROTO_FAULT_WATCHDOG = 2
} proto_fault_t;

/** EVENT "changed" bits. */
#define PROTO_EVT_STATE 0x01u
#define PROTO_EVT_FAULT 0x02u
#define PROTO_EVT_OUTPUTS 0x04u
#define PROTO_EVT_TRIGGERS 0x08u

/** Return codes of the protocol functions. */
typedef enum {
    PROTO_RET_OK = 0,
    PROTO_RET_ERR_BAD_ARG = 1,     /**< NULL pointer, or a payload longer than PROTO_MAX_PAYLOAD */
    PROTO_RET_ERR_EXHAUSTED = 2,   /**< output buffer too small */
    PROTO_RET_ERR_SHORT = 3,       /**< raw frame shorter than PROTO_MIN_RAW */
    PROTO_RET_ERR_LONG = 4,        /**< raw frame longer than PROTO_MAX_RAW */
    PROTO_RET_ERR_CRC = 5,         /**< CRC mismatch */
    PROTO_RET_ERR_VERSION = 6,     /**< version != PROTO_VERSION */
    PROTO_RET_ERR_UNKNOWN_CMD = 7, /**< not a command code (proto_check_command only) */
    PROTO_RET_ERR_PAYLOAD_LEN = 8  /**< payload length wrong for the code */
} proto_ret_t;

/** A parsed or to-be-built frame. payload points into a caller-owned buffer. */
typedef struct {
    uint8_t version;
    uint16_t seq;
    uint8_t cmd;
    const uint8_t *payload;
    size_t payload_len;
} proto_frame_t;

/* ---- little-endian field access (no alignment assumptions) ---- */
void proto_put_u16(uint8_t *p, uint16_t v);
void proto_put_u32(uint8_t *p, uint32_t v);
uint16_t proto_get_u16(const uint8_t *p);
uint32_t proto_get_u32(const uint8_t *p);

/**
 * Check a raw (COBS-decoded) frame: length, CRC, version. On success *out describes it and
 * out->payload points into raw. Whenever len >= PROTO_HEADER_LEN the header fields of *out are
 * filled even on error (so a NACK can echo them), with payload = NULL.
 * @return PROTO_RET_OK; PROTO_RET_ERR_BAD_ARG (NULL); PROTO_RET_ERR_SHORT; PROTO_RET_ERR_LONG;
 *         PROTO_RET_ERR_CRC; PROTO_RET_ERR_VERSION. Checks run in that order.
 */
proto_ret_t proto_parse(const uint8_t *raw, size_t len, proto_frame_t *out);

/**
 * Expected payload length of a command code.
 * @return the length (0..PROTO_MAX_PAYLOAD), or -1 if cmd is not a host->device command.
 */
int proto_command_payload_len(uint8_t cmd);

/**
 * Check that a parsed frame is a known command with the right payload length.
 * @return PROTO_RET_OK; PROTO_RET_ERR_BAD_ARG (NULL); PROTO_RET_ERR_UNKNOWN_CMD;
 *         PROTO_RET_ERR_PAYLOAD_LEN.
 */
proto_ret_t proto_check_command(const proto_frame_t *f);

/** NACK reason for a failed proto_parse/proto_check_command or COBS result. */
proto_nack_t proto_nack_for(proto_ret_t r);

/**
 * Build raw = header | payload | CRC into out (no COBS). Used by tests and the fuzzer.
 * @return PROTO_RET_OK with *out_len; PROTO_RET_ERR_BAD_ARG (NULL, or payload_len >
 *         PROTO_MAX_PAYLOAD, or payload NULL with payload_len > 0); PROTO_RET_ERR_EXHAUSTED.
 */
proto_ret_t proto_build_raw(const proto_frame_t *f, uint8_t *out, size_t cap, size_t *out_len);

/**
 * Build the wire form COBS(header | payload | CRC) + 0x00 into out, without a scratch buffer.
 * PROTO_MAX_WIRE bytes always suffice.
 * @return as proto_build_raw.
 */
proto_ret_t proto_encode(const proto_frame_t *f, uint8_t *out, size_t cap, size_t *out_len);

/* ---- command payloads ---- */

#define PROTO_SET_CHANNEL_LEN 9u
typedef struct {
    uint8_t channel;
    uint16_t pulse_width_us;
    uint32_t current_ua;
    uint16_t frequency_dhz;
} proto_set_channel_t;

/** @return PROTO_RET_OK; PROTO_RET_ERR_BAD_ARG (NULL); PROTO_RET_ERR_PAYLOAD_LEN (len != 9). */
proto_ret_t proto_set_channel_unpack(const uint8_t *p, size_t len, proto_set_channel_t *out);
/** Writes PROTO_SET_CHANNEL_LEN bytes to out. */
void proto_set_channel_pack(const proto_set_channel_t *in, uint8_t *out);

#define PROTO_TRIGGER_LEN 3u
typedef struct {
    uint8_t line;
    uint16_t duration_ms;
} proto_trigger_t;

/** @return PROTO_RET_OK; PROTO_RET_ERR_BAD_ARG (NULL); PROTO_RET_ERR_PAYLOAD_LEN (len != 3). */
proto_ret_t proto_trigger_unpack(const uint8_t *p, size_t len, proto_trigger_t *out);
void proto_trigger_pack(const proto_trigger_t *in, uint8_t *out);

/* ---- reply payloads ---- */

#define PROTO_ACK_HEADER_LEN 3u
#define PROTO_NACK_LEN 4u
#define PROTO_EVENT_LEN 9u

/** HELLO ACK data: identity and the compiled-in hard limits. */
#define PROTO_HELLO_LEN 23u
typedef struct {
    uint8_t protocol_version;
    uint8_t fw_major;
    uint8_t fw_minor;
    uint8_t n_channels;
    uint8_t n_triggers;
    uint32_t max_current_ua;
    uint16_t max_pulse_width_us;
    uint16_t max_frequency_dhz;
    uint32_t max_charge_nc;
    uint16_t ramp_ua_per_ms;
    uint16_t watchdog_ms;
    uint16_t max_trigger_ms;
} proto_hello_t;
void proto_hello_pack(const proto_hello_t *in, uint8_t *out);
/** @return PROTO_RET_OK; PROTO_RET_ERR_BAD_ARG (NULL); PROTO_RET_ERR_PAYLOAD_LEN. */
proto_ret_t proto_hello_unpack(const uint8_t *p, size_t len, proto_hello_t *out);

/** Per-channel STATUS record. */
#define PROTO_CH_CONFIGURED 0x01u
#define PROTO_CH_ON 0x02u
typedef struct {
    uint32_t target_ua;  /* current set by SET_CHANNEL */
    uint32_t applied_ua; /* current being delivered (ramps toward target) */
    uint16_t pulse_width_us;
    uint16_t frequency_dhz;
    uint8_t flags; /* PROTO_CH_* */
} proto_channel_status_t;

/** STATUS ACK data (the device state is in the ACK header). */
#define PROTO_STATUS_LEN (4u + 1u + 1u + 1u + 2u + 4u + 13u * PROTO_N_CHANNELS + 4u * PROTO_NACK_COUNT)
typedef struct {
    uint32_t t_ms;
    uint8_t fault;
    uint8_t outputs;  /* bit i: channel i on */
    uint8_t triggers; /* bit i: trigger line i high */
    uint16_t heartbeat_age_ms; /* saturates at 0xFFFF; 0xFFFF if no heartbeat yet */
    uint32_t rx_ok;            /* frames accepted (ACKed) */
    proto_channel_status_t ch[PROTO_N_CHANNELS];
    uint32_t rejected[PROTO_NACK_COUNT]; /* rejected[r - 1]: frames NACKed with reason r */
} proto_status_t;
void proto_status_pack(const proto_status_t *in, uint8_t *out);
/** @return PROTO_RET_OK; PROTO_RET_ERR_BAD_ARG (NULL); PROTO_RET_ERR_PAYLOAD_LEN. */
proto_ret_t proto_status_unpack(const uint8_t *p, size_t len, proto_status_t *out);

_Static_assert(PROTO_ACK_HEADER_LEN + PROTO_STATUS_LEN <= PROTO_MAX_PAYLOAD, "STATUS must fit one frame");
_Static_assert(PROTO_ACK_HEADER_LEN + PROTO_HELLO_LEN <= PROTO_MAX_PAYLOAD, "HELLO must fit one frame");
_Static_assert(PROTO_N_CHANNELS <= 8u && PROTO_N_TRIGGERS <= 8u, "masks are u8");

/* ---- stream receiver: COBS stream decoder + raw frame buffer in one caller-owned struct ---- */

typedef struct {
    cobs_decoder_t cobs;
    uint8_t buf[PROTO_MAX_RAW];
} proto_rx_t;

/** @return PROTO_RET_OK; PROTO_RET_ERR_BAD_ARG (NULL). */
proto_ret_t proto_rx_init(proto_rx_t *rx);

#ifdef __cplusplus
}
#endif

#endif /* STIMBOX_PROTOCOL_H */
