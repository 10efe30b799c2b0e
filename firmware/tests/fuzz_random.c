/*
 * fuzz_random.c - randomised fuzz run of the frame parser and device for machines without
 * clang/libFuzzer: N inputs (default 10^6), seeded and reproducible, a mix of
 *   - random byte strings (zeros included, so they split into random frames),
 *   - valid command frames with field values around the hard limits,
 *   - valid frames mutated before COBS (CRC recomputed or not) or on the wire (bit flips, byte
 *     changes, insertions, deletions, truncation, splices of two frames),
 * each fed through fuzz_step() (invariants checked after every input and every 1 ms tick).
 *
 *   fuzz-random [N] [SEED]
 * Prints one summary line: "fuzz: <N> frames (...) seed <S>: 0 invariant violations".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cobs.h"
#include "crc16.h"
#include "device.h"
#include "fuzz_common.h"
#include "hal_fake.h"
#include "protocol.h"

static uint64_t s_rng;
static uint32_t rnd(void) {
    s_rng ^= s_rng >> 12;
    s_rng ^= s_rng << 25;
    s_rng ^= s_rng >> 27;
    return (uint32_t)((s_rng * 0x2545F4914F6CDD1Dull) >> 32);
}
static uint32_t below(uint32_t n) {
    return n == 0u ? 0u : rnd() % n;
}

/* A value near a limit (or anything). */
static uint32_t near(uint32_t limit, uint32_t type_max) {
    switch (below(6)) {
    case 0:
        return limit;
    case 1:
        return limit + 1u;
    case 2:
        return limit > 0u ? limit - 1u : 0u;
    case 3:
        return below(type_max);
    case 4:
        return 0;
    default:
        return below(limit + 1u);
    }
}

static uint16_t s_seq;

/* A plausible command frame's raw bytes (header | payload | CRC). */
static size_t valid_raw(uint8_t *raw) {
    static const uint8_t weights[] = {
        PROTO_CMD_HELLO,     PROTO_CMD_ARM,       PROTO_CMD_ARM,         PROTO_CMD_DISARM,    PROTO_CMD_SET_CHANNEL,
        PROTO_CMD_SET_CHANNEL, PROTO_CMD_SET_CHANNEL, PROTO_CMD_STIM_ON, PROTO_CMD_STIM_ON,   PROTO_CMD_STIM_OFF,
        PROTO_CMD_HEARTBEAT, PROTO_CMD_HEARTBEAT, PROTO_CMD_HEARTBEAT,   PROTO_CMD_HEARTBEAT, PROTO_CMD_ESTOP,
        PROTO_CMD_STATUS,    PROTO_CMD_TRIGGER,   PROTO_CMD_CLEAR_FAULT, PROTO_CMD_CLEAR_FAULT};
    const uint8_t cmd = weights[below(sizeof weights)];
    uint8_t p[PROTO_MAX_PAYLOAD];
    size_t len = 0;
    if (cmd == PROTO_CMD_SET_CHANNEL) {
        const proto_set_channel_t c = {(uint8_t)near(DEV_N_CHANNELS - 1u, 256u),
                                       (uint16_t)near(DEV_MAX_PULSE_WIDTH_US, 65536u),
                                       near(DEV_MAX_CURRENT_UA, 0xFFFFFFFFu),
                                       (uint16_t)near(DEV_MAX_FREQUENCY_DHZ, 65536u)};
        proto_set_channel_pack(&c, p);
        len = PROTO_SET_CHANNEL_LEN;
    } else if (cmd == PROTO_CMD_STIM_ON || cmd == PROTO_CMD_STIM_OFF) {
        p[0] = below(4) == 0 ? (uint8_t)rnd() : (uint8_t)below(16);
        len = 1;
    } else if (cmd == PROTO_CMD_TRIGGER) {
        const proto_trigger_t t = {(uint8_t)near(DEV_N_TRIGGERS - 1u, 256u), (uint16_t)near(DEV_MAX_TRIGGER_MS, 65536u)};
        proto_trigger_pack(&t, p);
        len = PROTO_TRIGGER_LEN;
    }
    const uint16_t seq = below(64) == 0 ? (uint16_t)rnd() : ++s_seq;
    const proto_frame_t f = {PROTO_VERSION, seq, cmd, p, len};
    size_t n = 0;
    (void)proto_build_raw(&f, raw, PROTO_MAX_RAW + 16u, &n);
    return n;
}

static size_t wire_of(const uint8_t *raw, size_t n, uint8_t *wire, size_t cap) {
    size_t m = 0;
    if (cobs_encode(raw, n, wire, cap - 1u, &m) != COBS_RET_OK) {
        return 0;
    }
    wire[m++] = 0;
    return m;
}

static void fix_crc(uint8_t *raw, size_t n) {
    if (n >= 2u) {
        proto_put_u16(&raw[n - 2u], crc16_ccitt_false(raw, n - 2u));
    }
}

int main(int argc, char **argv) {
    const unsigned long long n_frames = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000ull;
    const unsigned long long seed = argc > 2 ? strtoull(argv[2], NULL, 10) : 1ull;
    s_rng = 0x9E3779B97F4A7C15ull ^ (seed * 0xD1B54A32D192ED03ull);
    if (s_rng == 0) {
        s_rng = 1;
    }
    const clock_t c0 = clock();
    fuzz_init();
    unsigned long long n_random = 0;
    unsigned long long n_valid = 0;
    unsigned long long n_mut_raw = 0;
    unsigned long long n_mut_wire = 0;
    unsigned long long stim_ms = 0;
    uint8_t raw[PROTO_MAX_RAW + 64];
    uint8_t wire[2 * PROTO_MAX_WIRE + 64];
    uint8_t prev[PROTO_MAX_WIRE + 8];
    size_t prev_len = 0;
    for (unsigned long long i = 0; i < n_frames; i++) {
        size_t m = 0;
        const uint32_t kind = below(100);
        if (kind < 25u) {
            m = below(PROTO_MAX_WIRE + 40u);
            const uint32_t zero_rate = below(3) == 0 ? 0u : 1u + below(32);
            for (size_t k = 0; k < m; k++) {
                wire[k] = (zero_rate != 0u && below(zero_rate) == 0u) ? 0u : (uint8_t)rnd();
            }
            if (m > 0 && below(2) == 0) {
                wire[m - 1u] = 0;
            }
            n_random++;
        } else if (kind < 50u) {
            m = wire_of(raw, valid_raw(raw), wire, sizeof wire);
            n_valid++;
        } else if (kind < 75u) {
            size_t n = valid_raw(raw);
            switch (below(6)) {
            case 0: /* flip 1..3 bits */
                for (uint32_t k = 1u + below(3); k > 0; k--) {
                    raw[below((uint32_t)n)] ^= (uint8_t)(1u << below(8));
                }
                break;
            case 1: /* change a byte, CRC fixed: reaches the command handlers with odd values */
                raw[below((uint32_t)n - 2u)] = (uint8_t)rnd();
                fix_crc(raw, n);
                break;
            case 2: /* wrong length, CRC fixed */
                n = below(2) == 0 ? (below((uint32_t)n) + 2u) : n + below(8);
                if (n > PROTO_MAX_RAW + 8u) {
                    n = PROTO_MAX_RAW + 8u;
                }
                for (size_t k = 0; k < n; k++) {
                    if (k >= PROTO_HEADER_LEN && below(4) == 0) {
                        raw[k] = (uint8_t)rnd();
                    }
                }
                fix_crc(raw, n);
                break;
            case 3: /* truncate */
                n = below((uint32_t)n + 1u);
                break;
            case 4: /* version / command byte, CRC fixed */
                raw[below(2) == 0 ? 0 : 3] = (uint8_t)rnd();
                fix_crc(raw, n);
                break;
            default: /* oversize, CRC fixed */
                n = PROTO_MAX_RAW + below(16);
                for (size_t k = PROTO_HEADER_LEN; k < n; k++) {
                    raw[k] = (uint8_t)rnd();
                }
                fix_crc(raw, n);
                break;
            }
            m = n > 0 ? wire_of(raw, n, wire, sizeof wire) : 0;
            n_mut_raw++;
        } else {
            m = wire_of(raw, valid_raw(raw), wire, sizeof wire);
            switch (below(6)) {
            case 0:
                wire[below((uint32_t)m)] ^= (uint8_t)(1u << below(8));
                break;
            case 1:
                wire[below((uint32_t)m)] = (uint8_t)rnd();
                break;
            case 2: { /* insert */
                const size_t at = below((uint32_t)m + 1u);
                memmove(&wire[at + 1u], &wire[at], m - at);
                wire[at] = (uint8_t)rnd();
                m++;
                break;
            }
            case 3: { /* delete */
                const size_t at = below((uint32_t)m);
                memmove(&wire[at], &wire[at + 1u], m - at - 1u);
                m--;
                break;
            }
            case 4: /* drop the delimiter: merges with the next input */
                m--;
                break;
            default: /* splice: head of this frame + tail of the previous one */
                if (prev_len > 0) {
                    const size_t cut = below((uint32_t)m);
                    const size_t from = below((uint32_t)prev_len);
                    memcpy(&wire[cut], &prev[from], prev_len - from);
                    m = cut + prev_len - from;
                }
                break;
            }
            n_mut_wire++;
        }
        if (m > 0 && m <= sizeof prev) {
            memcpy(prev, wire, m);
            prev_len = m;
        }
        const uint32_t r = below(1000);
        const uint32_t advance = r < 5u ? 60u + below(200) : (r < 600u ? 0u : 1u + below(3));
        bool stimulating = false;
        for (size_t c = 0; c < DEV_N_CHANNELS; c++) {
            stimulating = stimulating || g_hal.on[c];
        }
        fuzz_step(wire, m, advance);
        if (stimulating) {
            stim_ms += advance;
        }
    }
    const double secs = (double)(clock() - c0) / CLOCKS_PER_SEC;
    unsigned long long nacks = 0;
    for (size_t r = 1; r <= PROTO_NACK_COUNT; r++) {
        nacks += g_hal.nack_by_reason[r];
    }
    printf("fuzz: %llu frames (%llu random, %llu valid, %llu mutated raw, %llu mutated wire) seed %llu in %.1f s\n",
           n_frames, n_random, n_valid, n_mut_raw, n_mut_wire, seed, secs);
    printf("fuzz: device answered %llu frames: %llu ACK, %llu NACK (framing %llu, crc %llu, version %llu, "
           "unknown %llu, length %llu, sequence %llu, bad_arg %llu, limit %llu, not_armed %llu, fault %llu, "
           "not_configured %llu), %llu events, ~%llu ms with an output on\n",
           fuzz_answered(), g_hal.tx_acks, nacks, g_hal.nack_by_reason[1], g_hal.nack_by_reason[2],
           g_hal.nack_by_reason[3], g_hal.nack_by_reason[4], g_hal.nack_by_reason[5], g_hal.nack_by_reason[6],
           g_hal.nack_by_reason[7], g_hal.nack_by_reason[8], g_hal.nack_by_reason[9], g_hal.nack_by_reason[10],
           g_hal.nack_by_reason[11], g_hal.tx_events, stim_ms);
    printf("fuzz: %llu frames, 0 invariant violations, 0 malformed device frames\n", n_frames);
    return 0;
}
