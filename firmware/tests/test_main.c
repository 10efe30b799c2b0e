/*
 * test_main.c - host unit tests of the firmware core: known vectors, every error path, seeded
 * random round trips, the state machine, hard limits, ramp, watchdog timing and fault latching.
 * Built with sanitizers by `make test`; prints one summary line:
 *   "firmware unit tests: <cases> cases, <checks> checks, <failures> failures"
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cobs.h"
#include "crc16.h"
#include "device.h"
#include "hal_fake.h"
#include "protocol.h"

/* ---------------------------------------------------------------- mini framework */

static unsigned long g_checks;
static unsigned long g_failures;

#define CHECK(cond)                                                                                                \
    do {                                                                                                           \
        g_checks++;                                                                                                \
        if (!(cond)) {                                                                                             \
            g_failures++;                                                                                          \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                               \
        }                                                                                                          \
    } while (0)

#define CHECK_EQ(a, b)                                                                                             \
    do {                                                                                                           \
        const long long va_ = (long long)(a);                                                                      \
        const long long vb_ = (long long)(b);                                                                      \
        g_checks++;                                                                                                \
        if (va_ != vb_) {                                                                                          \
            g_failures++;                                                                                          \
            fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %s (%lld != %lld)\n", __FILE__, __LINE__, #a, #b, va_,  \
                    vb_);                                                                                          \
        }                                                                                                          \
    } while (0)

#define CHECK_MEM(a, b, n)                                                                                         \
    do {                                                                                                           \
        g_checks++;                                                                                                \
        if (memcmp((a), (b), (n)) != 0) {                                                                          \
            g_failures++;                                                                                          \
            fprintf(stderr, "%s:%d: CHECK_MEM failed: %s vs %s (%zu bytes)\n", __FILE__, __LINE__, #a, #b,         \
                    (size_t)(n));                                                                                  \
        }                                                                                                          \
    } while (0)

/* xorshift64* : seeded, reproducible */
static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return (uint32_t)((g_rng * 0x2545F4914F6CDD1Dull) >> 32);
}
static uint32_t rnd_below(uint32_t n) {
    return n == 0u ? 0u : rnd() % n;
}

/* ---------------------------------------------------------------- COBS */

typedef struct {
    const char *name;
    size_t dec_len;
    uint8_t dec[300];
    size_t enc_len;
    uint8_t enc[300];
} cobs_vec_t;

/* Wikipedia "Encoding examples" 1-11 plus the empty input; long ones are filled in at run time. */
static cobs_vec_t g_vec[12];
static size_t g_nvec;

static void add_vec(const char *name, const uint8_t *dec, size_t dl, const uint8_t *enc, size_t el) {
    cobs_vec_t *v = &g_vec[g_nvec++];
    v->name = name;
    v->dec_len = dl;
    v->enc_len = el;
    if (dl > 0) {
        memcpy(v->dec, dec, dl);
    }
    memcpy(v->enc, enc, el);
}

static void build_vectors(void) {
    g_nvec = 0;
    add_vec("empty", NULL, 0, (const uint8_t[]){0x01}, 1);
    add_vec("00", (const uint8_t[]){0x00}, 1, (const uint8_t[]){0x01, 0x01}, 2);
    add_vec("00 00", (const uint8_t[]){0x00, 0x00}, 2, (const uint8_t[]){0x01, 0x01, 0x01}, 3);
    add_vec("00 11 00", (const uint8_t[]){0x00, 0x11, 0x00}, 3, (const uint8_t[]){0x01, 0x02, 0x11, 0x01}, 4);
    add_vec("11 22 00 33", (const uint8_t[]){0x11, 0x22, 0x00, 0x33}, 4,
            (const uint8_t[]){0x03, 0x11, 0x22, 0x02, 0x33}, 5);
    add_vec("11 22 33 44", (const uint8_t[]){0x11, 0x22, 0x33, 0x44}, 4,
            (const uint8_t[]){0x05, 0x11, 0x22, 0x33, 0x44}, 5);
    add_vec("11 00 00 00", (const uint8_t[]){0x11, 0x00, 0x00, 0x00}, 4,
            (const uint8_t[]){0x02, 0x11, 0x01, 0x01, 0x01}, 5);
    uint8_t d[300];
    uint8_t e[300];
    /* 7: 01..FE (254 bytes) -> FF 01..FE */
    for (size_t i = 0; i < 254; i++) {
        d[i] = (uint8_t)(i + 1);
    }
    e[0] = 0xFF;
    memcpy(&e[1], d, 254);
    add_vec("01..FE", d, 254, e, 255);
    /* 8: 00 01..FE (255 bytes) -> 01 FF 01..FE */
    d[0] = 0x00;
    for (size_t i = 1; i < 255; i++) {
        d[i] = (uint8_t)i;
    }
    e[0] = 0x01;
    e[1] = 0xFF;
    memcpy(&e[2], &d[1], 254);
    add_vec("00 01..FE", d, 255, e, 256);
    /* 9: 01..FF (255 bytes) -> FF 01..FE 02 FF */
    for (size_t i = 0; i < 255; i++) {
        d[i] = (uint8_t)(i + 1);
    }
    e[0] = 0xFF;
    memcpy(&e[1], d, 254);
    e[255] = 0x02;
    e[256] = 0xFF;
    add_vec("01..FF", d, 255, e, 257);
    /* 10: 02..FF 00 (255 bytes) -> FF 02..FF 01 01 */
    for (size_t i = 0; i < 254; i++) {
        d[i] = (uint8_t)(i + 2);
    }
    d[254] = 0x00;
    e[0] = 0xFF;
    memcpy(&e[1], d, 254);
    e[255] = 0x01;
    e[256] = 0x01;
    add_vec("02..FF 00", d, 255, e, 257);
    /* 11: 03..FF 00 01 (255 bytes) -> FE 03..FF 02 01 */
    for (size_t i = 0; i < 253; i++) {
        d[i] = (uint8_t)(i + 3);
    }
    d[253] = 0x00;
    d[254] = 0x01;
    e[0] = 0xFE;
    memcpy(&e[1], d, 253);
    e[254] = 0x02;
    e[255] = 0x01;
    add_vec("03..FF 00 01", d, 255, e, 256);
}

static void test_cobs_known_vectors(void) {
    build_vectors();
    CHECK_EQ(g_nvec, 12);
    for (size_t k = 0; k < g_nvec; k++) {
        const cobs_vec_t *v = &g_vec[k];
        uint8_t out[300];
        size_t n = 0;
        CHECK_EQ(cobs_encode(v->dec, v->dec_len, out, sizeof out, &n), COBS_RET_OK);
        CHECK_EQ(n, v->enc_len);
        CHECK_MEM(out, v->enc, v->enc_len);
        CHECK(n <= COBS_ENCODE_MAX(v->dec_len));
        /* exact capacity works, one less is exhausted, for every smaller capacity too */
        CHECK_EQ(cobs_encode(v->dec, v->dec_len, out, v->enc_len, &n), COBS_RET_OK);
        for (size_t cap = 0; cap < v->enc_len; cap++) {
            CHECK_EQ(cobs_encode(v->dec, v->dec_len, out, cap, &n), COBS_RET_ERR_EXHAUSTED);
        }
        n = 999;
        CHECK_EQ(cobs_decode(v->enc, v->enc_len, out, sizeof out, &n), COBS_RET_OK);
        CHECK_EQ(n, v->dec_len);
        if (v->dec_len > 0) {
            CHECK_MEM(out, v->dec, v->dec_len);
            CHECK_EQ(cobs_decode(v->enc, v->enc_len, out, v->dec_len - 1u, &n), COBS_RET_ERR_EXHAUSTED);
        }
        /* stream decoder */
        cobs_decoder_t dec;
        uint8_t buf[300];
        CHECK_EQ(cobs_decoder_init(&dec, buf, sizeof buf), COBS_RET_OK);
        for (size_t i = 0; i < v->enc_len; i++) {
            CHECK_EQ(cobs_decoder_push(&dec, v->enc[i]), COBS_DEC_MORE);
        }
        CHECK_EQ(cobs_decoder_push(&dec, 0x00), COBS_DEC_FRAME);
        CHECK_EQ(cobs_decoder_frame_len(&dec), v->dec_len);
        if (v->dec_len > 0) {
            CHECK_MEM(buf, v->dec, v->dec_len);
        }
    }
}

static void test_cobs_errors(void) {
    uint8_t out[16];
    size_t n = 0;
    const uint8_t in[4] = {1, 2, 3, 4};
    CHECK_EQ(cobs_encode(NULL, 1, out, sizeof out, &n), COBS_RET_ERR_BAD_ARG);
    CHECK_EQ(cobs_encode(NULL, 0, out, sizeof out, &n), COBS_RET_OK); /* empty input may be NULL */
    CHECK_EQ(n, 1);
    CHECK_EQ(cobs_encode(in, 4, NULL, sizeof out, &n), COBS_RET_ERR_BAD_ARG);
    CHECK_EQ(cobs_encode(in, 4, out, sizeof out, NULL), COBS_RET_ERR_BAD_ARG);
    CHECK_EQ(cobs_decode(NULL, 1, out, sizeof out, &n), COBS_RET_ERR_BAD_ARG);
    CHECK_EQ(cobs_decode(in, 1, NULL, sizeof out, &n), COBS_RET_ERR_BAD_ARG);
    CHECK_EQ(cobs_decode(in, 1, out, sizeof out, NULL), COBS_RET_ERR_BAD_ARG);
    /* empty input, a zero byte (as code, as data), a block running past the end */
    CHECK_EQ(cobs_decode(in, 0, out, sizeof out, &n), COBS_RET_ERR_BAD_PAYLOAD);
    CHECK_EQ(cobs_decode((const uint8_t[]){0x00}, 1, out, sizeof out, &n), COBS_RET_ERR_BAD_PAYLOAD);
    CHECK_EQ(cobs_decode((const uint8_t[]){0x03, 0x11, 0x00}, 3, out, sizeof out, &n), COBS_RET_ERR_BAD_PAYLOAD);
    CHECK_EQ(cobs_decode((const uint8_t[]){0x05, 0x11, 0x22}, 3, out, sizeof out, &n), COBS_RET_ERR_BAD_PAYLOAD);
    CHECK_EQ(cobs_decode((const uint8_t[]){0x02, 0x11, 0x03, 0x22}, 4, out, sizeof out, &n),
             COBS_RET_ERR_BAD_PAYLOAD);
    /* exhausted when the implied zero does not fit */
    CHECK_EQ(cobs_decode((const uint8_t[]){0x02, 0x11, 0x02, 0x22}, 4, out, 1, &n), COBS_RET_ERR_EXHAUSTED);
    /* incremental encoder argument and exhaustion paths */
    cobs_enc_t enc;
    CHECK_EQ(cobs_enc_begin(NULL, out, 4), COBS_RET_ERR_BAD_ARG);
    CHECK_EQ(cobs_enc_begin(&enc, NULL, 4), COBS_RET_ERR_BAD_ARG);
    CHECK_EQ(cobs_enc_begin(&enc, out, 0), COBS_RET_ERR_EXHAUSTED);
    CHECK_EQ(cobs_enc_push(&enc, in, 1), COBS_RET_ERR_EXHAUSTED);
    CHECK_EQ(cobs_enc_end(&enc, false, &n), COBS_RET_ERR_EXHAUSTED);
    CHECK_EQ(cobs_enc_begin(&enc, out, 5), COBS_RET_OK);
    CHECK_EQ(cobs_enc_push(NULL, in, 1), COBS_RET_ERR_BAD_ARG);
    CHECK_EQ(cobs_enc_push(&enc, NULL, 1), COBS_RET_ERR_BAD_ARG);
    CHECK_EQ(cobs_enc_push(&enc, NULL, 0), COBS_RET_OK);
    CHECK_EQ(cobs_enc_push(&enc, in, 4), COBS_RET_OK);
    CHECK_EQ(cobs_enc_end(NULL, true, &n), COBS_RET_ERR_BAD_ARG);
    CHECK_EQ(cobs_enc_end(&enc, true, NULL), COBS_RET_ERR_BAD_ARG);
    CHECK_EQ(cobs_enc_end(&enc, true, &n), COBS_RET_ERR_EXHAUSTED); /* no room for the delimiter */
    CHECK_EQ(cobs_enc_begin(&enc, out, 6), COBS_RET_OK);
    CHECK_EQ(cobs_enc_push(&enc, in, 4), COBS_RET_OK);
    CHECK_EQ(cobs_enc_end(&enc, true, &n), COBS_RET_OK);
    CHECK_EQ(n, 6);
    CHECK_EQ(out[5], 0x00);
    /* exhaustion on a zero byte (block close needs a new code slot) and after a full block */
    CHECK_EQ(cobs_enc_begin(&enc, out, 2), COBS_RET_OK);
    CHECK_EQ(cobs_enc_push(&enc, (const uint8_t[]){0x11, 0x00}, 2), COBS_RET_ERR_EXHAUSTED);
    uint8_t big[300];
    uint8_t ones[255];
    memset(ones, 0x01, sizeof ones);
    CHECK_EQ(cobs_enc_begin(&enc, big, 255), COBS_RET_OK);
    CHECK_EQ(cobs_enc_push(&enc, ones, 254), COBS_RET_OK);
    CHECK_EQ(cobs_enc_push(&enc, ones, 1), COBS_RET_ERR_EXHAUSTED);
    /* stream decoder init errors */
    cobs_decoder_t dec;
    CHECK_EQ(cobs_decoder_init(NULL, out, 4), COBS_RET_ERR_BAD_ARG);
    CHECK_EQ(cobs_decoder_init(&dec, NULL, 4), COBS_RET_ERR_BAD_ARG);
    CHECK_EQ(cobs_decoder_init(&dec, out, 0), COBS_RET_ERR_BAD_ARG);
}

static void test_cobs_incremental_split(void) {
    build_vectors();
    for (size_t k = 0; k < g_nvec; k++) {
        const cobs_vec_t *v = &g_vec[k];
        for (size_t cut = 0; cut <= v->dec_len; cut++) {
            uint8_t out[300];
            size_t n = 0;
            cobs_enc_t enc;
            CHECK_EQ(cobs_enc_begin(&enc, out, sizeof out), COBS_RET_OK);
            CHECK_EQ(cobs_enc_push(&enc, v->dec, cut), COBS_RET_OK);
            CHECK_EQ(cobs_enc_push(&enc, v->dec + cut, v->dec_len - cut), COBS_RET_OK);
            CHECK_EQ(cobs_enc_end(&enc, true, &n), COBS_RET_OK);
            CHECK_EQ(n, v->enc_len + 1u);
            CHECK_MEM(out, v->enc, v->enc_len);
        }
    }
}

static void test_cobs_stream_decoder_errors(void) {
    cobs_decoder_t dec;
    uint8_t buf[8];
    CHECK_EQ(cobs_decoder_init(&dec, buf, sizeof buf), COBS_RET_OK);
    /* back-to-back delimiters are empty frames and are skipped */
    CHECK_EQ(cobs_decoder_push(&dec, 0x00), COBS_DEC_MORE);
    CHECK_EQ(cobs_decoder_push(&dec, 0x00), COBS_DEC_MORE);
    /* truncated block: code says 4 data bytes, 2 arrive */
    CHECK_EQ(cobs_decoder_push(&dec, 0x05), COBS_DEC_MORE);
    CHECK_EQ(cobs_decoder_push(&dec, 0x11), COBS_DEC_MORE);
    CHECK_EQ(cobs_decoder_push(&dec, 0x22), COBS_DEC_MORE);
    CHECK_EQ(cobs_decoder_push(&dec, 0x00), COBS_DEC_ERR_MALFORMED);
    /* resynchronised: the next frame is fine */
    const uint8_t ok[] = {0x03, 0x11, 0x22, 0x02, 0x33, 0x00};
    for (size_t i = 0; i + 1 < sizeof ok; i++) {
        CHECK_EQ(cobs_decoder_push(&dec, ok[i]), COBS_DEC_MORE);
    }
    CHECK_EQ(cobs_decoder_push(&dec, 0x00), COBS_DEC_FRAME);
    CHECK_EQ(cobs_decoder_frame_len(&dec), 4);
    CHECK_MEM(buf, ((const uint8_t[]){0x11, 0x22, 0x00, 0x33}), 4);
    /* overflow: 9 decoded bytes into an 8-byte buffer */
    CHECK_EQ(cobs_decoder_push(&dec, 0x0A), COBS_DEC_MORE);
    for (int i = 0; i < 9; i++) {
        CHECK_EQ(cobs_decoder_push(&dec, 0x42), COBS_DEC_MORE);
    }
    CHECK_EQ(cobs_decoder_push(&dec, 0x00), COBS_DEC_ERR_OVERFLOW);
    CHECK_EQ(cobs_decoder_frame_len(&dec), 0);
    /* overflow through an implied zero */
    const uint8_t z[] = {0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01};
    for (size_t i = 0; i < sizeof z; i++) {
        CHECK_EQ(cobs_decoder_push(&dec, z[i]), COBS_DEC_MORE);
    }
    CHECK_EQ(cobs_decoder_push(&dec, 0x00), COBS_DEC_ERR_OVERFLOW);
    /* exactly full is fine: 8 bytes */
    CHECK_EQ(cobs_decoder_push(&dec, 0x09), COBS_DEC_MORE);
    for (int i = 0; i < 8; i++) {
        CHECK_EQ(cobs_decoder_push(&dec, 0x42), COBS_DEC_MORE);
    }
    CHECK_EQ(cobs_decoder_push(&dec, 0x00), COBS_DEC_FRAME);
    CHECK_EQ(cobs_decoder_frame_len(&dec), 8);
    /* reset drops a partial frame */
    CHECK_EQ(cobs_decoder_push(&dec, 0x05), COBS_DEC_MORE);
    cobs_decoder_reset(&dec);
    CHECK_EQ(cobs_decoder_push(&dec, 0x00), COBS_DEC_MORE);
    CHECK_EQ(cobs_decoder_push(&dec, 0x02), COBS_DEC_MORE);
    CHECK_EQ(cobs_decoder_push(&dec, 0x07), COBS_DEC_MORE);
    CHECK_EQ(cobs_decoder_push(&dec, 0x00), COBS_DEC_FRAME);
    CHECK_EQ(cobs_decoder_frame_len(&dec), 1);
    CHECK_EQ(buf[0], 0x07);
}

static void test_cobs_random_round_trips(void) {
    g_rng = 0xC0B5C0B5ull;
    enum { N = 20000, MAXLEN = 1100 };
    static uint8_t in[MAXLEN];
    static uint8_t enc[COBS_ENCODE_MAX(MAXLEN) + 1];
    static uint8_t dec[MAXLEN];
    static uint8_t sbuf[MAXLEN];
    unsigned long bad = 0;
    for (int it = 0; it < N; it++) {
        const size_t len = rnd_below(it % 10 == 0 ? MAXLEN : 300);
        const uint32_t zero_per_256 = rnd_below(4) == 0 ? 0u : rnd_below(256);
        for (size_t i = 0; i < len; i++) {
            in[i] = rnd_below(256) < zero_per_256 ? 0u : (uint8_t)(1u + rnd_below(255));
        }
        size_t n = 0;
        size_t m = 0;
        if (cobs_encode(in, len, enc, sizeof enc, &n) != COBS_RET_OK || n > COBS_ENCODE_MAX(len) ||
            memchr(enc, 0, n) != NULL || cobs_decode(enc, n, dec, sizeof dec, &m) != COBS_RET_OK || m != len ||
            (len > 0 && memcmp(in, dec, len) != 0)) {
            bad++;
            continue;
        }
        cobs_decoder_t sd;
        (void)cobs_decoder_init(&sd, sbuf, sizeof sbuf);
        cobs_dec_t r = COBS_DEC_MORE;
        for (size_t i = 0; i < n; i++) {
            r = cobs_decoder_push(&sd, enc[i]);
            if (r != COBS_DEC_MORE) {
                break;
            }
        }
        if (r != COBS_DEC_MORE || cobs_decoder_push(&sd, 0) != COBS_DEC_FRAME || cobs_decoder_frame_len(&sd) != len ||
            (len > 0 && memcmp(in, sbuf, len) != 0)) {
            bad++;
        }
    }
    CHECK_EQ(bad, 0);
    g_checks += N; /* one round trip each */
}

/* ---------------------------------------------------------------- CRC */

static void test_crc16(void) {
    const uint8_t check[] = "123456789";
    CHECK_EQ(crc16_ccitt_false(check, 9), 0x29B1);
    CHECK_EQ(crc16_ccitt_false((const uint8_t *)"A", 1), 0xB915);
    CHECK_EQ(crc16_ccitt_false(check, 0), 0xFFFF);
    CHECK_EQ(crc16_ccitt_false(NULL, 0), 0xFFFF);
    CHECK_EQ(crc16_ccitt_update(0x1234, NULL, 5), 0x1234);
    for (size_t cut = 0; cut <= 9; cut++) {
        const uint16_t a = crc16_ccitt_update(CRC16_CCITT_FALSE_INIT, check, cut);
        CHECK_EQ(crc16_ccitt_update(a, check + cut, 9 - cut), 0x29B1);
    }
}

/* ---------------------------------------------------------------- protocol */

static void test_proto_known_frames(void) {
    /* Cross-language vectors: the same bytes are asserted by tests/test_firmware.py. */
    uint8_t out[PROTO_MAX_WIRE];
    size_t n = 0;
    proto_frame_t f = {PROTO_VERSION, 1, PROTO_CMD_HELLO, NULL, 0};
    CHECK_EQ(proto_encode(&f, out, sizeof out, &n), PROTO_RET_OK);
    const uint8_t hello_wire[] = {0x03, 0x01, 0x01, 0x04, 0x01, 0x65, 0xD5, 0x00};
    CHECK_EQ(n, sizeof hello_wire);
    CHECK_MEM(out, hello_wire, sizeof hello_wire);

    const proto_set_channel_t sc = {0, 200, 20000, 250};
    uint8_t p[PROTO_SET_CHANNEL_LEN];
    proto_set_channel_pack(&sc, p);
    f = (proto_frame_t){PROTO_VERSION, 0x1234, PROTO_CMD_SET_CHANNEL, p, sizeof p};
    CHECK_EQ(proto_encode(&f, out, sizeof out, &n), PROTO_RET_OK);
    const uint8_t sc_wire[] = {0x05, 0x01, 0x34, 0x12, 0x04, 0x02, 0xC8, 0x03, 0x20, 0x4E,
                               0x01, 0x02, 0xFA, 0x03, 0xB9, 0x63, 0x00};
    CHECK_EQ(n, sizeof sc_wire);
    CHECK_MEM(out, sc_wire, sizeof sc_wire);

    uint8_t raw[PROTO_MAX_RAW];
    CHECK_EQ(proto_build_raw(&f, raw, sizeof raw, &n), PROTO_RET_OK);
    const uint8_t sc_raw[] = {0x01, 0x34, 0x12, 0x04, 0x00, 0xC8, 0x00, 0x20, 0x4E, 0x00, 0x00, 0xFA, 0x00, 0xB9, 0x63};
    CHECK_EQ(n, sizeof sc_raw);
    CHECK_MEM(raw, sc_raw, sizeof sc_raw);
    proto_frame_t g;
    CHECK_EQ(proto_parse(raw, n, &g), PROTO_RET_OK);
    CHECK_EQ(g.seq, 0x1234);
    CHECK_EQ(g.cmd, PROTO_CMD_SET_CHANNEL);
    CHECK_EQ(g.payload_len, 9);
    CHECK_EQ(proto_check_command(&g), PROTO_RET_OK);
    proto_set_channel_t back;
    CHECK_EQ(proto_set_channel_unpack(g.payload, g.payload_len, &back), PROTO_RET_OK);
    CHECK_EQ(back.channel, 0);
    CHECK_EQ(back.pulse_width_us, 200);
    CHECK_EQ(back.current_ua, 20000);
    CHECK_EQ(back.frequency_dhz, 250);
}

static void test_proto_parse_errors(void) {
    uint8_t raw[PROTO_MAX_RAW + 8];
    proto_frame_t f;
    size_t n = 0;
    CHECK_EQ(proto_parse(NULL, 6, &f), PROTO_RET_ERR_BAD_ARG);
    CHECK_EQ(proto_parse(raw, 6, NULL), PROTO_RET_ERR_BAD_ARG);
    /* short: every length below header + CRC */
    const proto_frame_t hb = {PROTO_VERSION, 0x0102, PROTO_CMD_HEARTBEAT, NULL, 0};
    CHECK_EQ(proto_build_raw(&hb, raw, sizeof raw, &n), PROTO_RET_OK);
    CHECK_EQ(n, PROTO_MIN_RAW);
    for (size_t len = 0; len < PROTO_MIN_RAW; len++) {
        CHECK_EQ(proto_parse(raw, len, &f), PROTO_RET_ERR_SHORT);
        if (len >= PROTO_HEADER_LEN) {
            CHECK_EQ(f.seq, 0x0102); /* header echoed even on error */
            CHECK_EQ(f.cmd, PROTO_CMD_HEARTBEAT);
        }
    }
    CHECK_EQ(proto_parse(raw, PROTO_MAX_RAW + 1u, &f), PROTO_RET_ERR_LONG);
    /* every single-bit flip anywhere is a CRC error (CRC-16 detects all 1-bit errors) */
    for (size_t bit = 0; bit < n * 8u; bit++) {
        uint8_t c[PROTO_MIN_RAW];
        memcpy(c, raw, n);
        c[bit / 8u] ^= (uint8_t)(1u << (bit % 8u));
        CHECK_EQ(proto_parse(c, n, &f), PROTO_RET_ERR_CRC);
    }
    /* version (with a valid CRC) */
    const proto_frame_t v2 = {2, 7, PROTO_CMD_HEARTBEAT, NULL, 0};
    CHECK_EQ(proto_build_raw(&v2, raw, sizeof raw, &n), PROTO_RET_OK);
    CHECK_EQ(proto_parse(raw, n, &f), PROTO_RET_ERR_VERSION);
    CHECK_EQ(f.version, 2);
    /* unknown command codes, including reply codes sent to the device */
    const uint8_t unknown[] = {0x00, 0x0C, 0x7F, PROTO_REPLY_ACK, PROTO_REPLY_NACK, PROTO_REPLY_EVENT, 0xFF};
    for (size_t i = 0; i < sizeof unknown; i++) {
        const proto_frame_t u = {PROTO_VERSION, 7, unknown[i], NULL, 0};
        CHECK_EQ(proto_build_raw(&u, raw, sizeof raw, &n), PROTO_RET_OK);
        CHECK_EQ(proto_parse(raw, n, &f), PROTO_RET_OK);
        CHECK_EQ(proto_check_command(&f), PROTO_RET_ERR_UNKNOWN_CMD);
        CHECK_EQ(proto_command_payload_len(unknown[i]), -1);
    }
    CHECK_EQ(proto_check_command(NULL), PROTO_RET_ERR_BAD_ARG);
    /* payload length one short and one long for every command */
    uint8_t payload[PROTO_MAX_PAYLOAD] = {0};
    for (uint8_t cmd = PROTO_CMD_HELLO; cmd <= PROTO_CMD_CLEAR_FAULT; cmd++) {
        const int want = proto_command_payload_len(cmd);
        CHECK(want >= 0);
        const proto_frame_t ok = {PROTO_VERSION, 7, cmd, payload, (size_t)want};
        CHECK_EQ(proto_build_raw(&ok, raw, sizeof raw, &n), PROTO_RET_OK);
        CHECK_EQ(proto_parse(raw, n, &f), PROTO_RET_OK);
        CHECK_EQ(proto_check_command(&f), PROTO_RET_OK);
        const proto_frame_t longer = {PROTO_VERSION, 7, cmd, payload, (size_t)want + 1u};
        CHECK_EQ(proto_build_raw(&longer, raw, sizeof raw, &n), PROTO_RET_OK);
        CHECK_EQ(proto_parse(raw, n, &f), PROTO_RET_OK);
        CHECK_EQ(proto_check_command(&f), PROTO_RET_ERR_PAYLOAD_LEN);
        if (want > 0) {
            const proto_frame_t shorter = {PROTO_VERSION, 7, cmd, payload, (size_t)want - 1u};
            CHECK_EQ(proto_build_raw(&shorter, raw, sizeof raw, &n), PROTO_RET_OK);
            CHECK_EQ(proto_parse(raw, n, &f), PROTO_RET_OK);
            CHECK_EQ(proto_check_command(&f), PROTO_RET_ERR_PAYLOAD_LEN);
        }
    }
    /* nack mapping */
    CHECK_EQ(proto_nack_for(PROTO_RET_OK), PROTO_NACK_NONE);
    CHECK_EQ(proto_nack_for(PROTO_RET_ERR_SHORT), PROTO_NACK_BAD_FRAMING);
    CHECK_EQ(proto_nack_for(PROTO_RET_ERR_LONG), PROTO_NACK_BAD_FRAMING);
    CHECK_EQ(proto_nack_for(PROTO_RET_ERR_BAD_ARG), PROTO_NACK_BAD_FRAMING);
    CHECK_EQ(proto_nack_for(PROTO_RET_ERR_EXHAUSTED), PROTO_NACK_BAD_FRAMING);
    CHECK_EQ(proto_nack_for(PROTO_RET_ERR_CRC), PROTO_NACK_BAD_CRC);
    CHECK_EQ(proto_nack_for(PROTO_RET_ERR_VERSION), PROTO_NACK_BAD_VERSION);
    CHECK_EQ(proto_nack_for(PROTO_RET_ERR_UNKNOWN_CMD), PROTO_NACK_UNKNOWN_CMD);
    CHECK_EQ(proto_nack_for(PROTO_RET_ERR_PAYLOAD_LEN), PROTO_NACK_BAD_LENGTH);
}

static void test_proto_build_errors(void) {
    uint8_t out[PROTO_MAX_WIRE];
    uint8_t payload[PROTO_MAX_PAYLOAD + 1u] = {0};
    size_t n = 0;
    const proto_frame_t ok = {PROTO_VERSION, 1, PROTO_CMD_STATUS, payload, 0};
    CHECK_EQ(proto_encode(NULL, out, sizeof out, &n), PROTO_RET_ERR_BAD_ARG);
    CHECK_EQ(proto_encode(&ok, NULL, sizeof out, &n), PROTO_RET_ERR_BAD_ARG);
    CHECK_EQ(proto_encode(&ok, out, sizeof out, NULL), PROTO_RET_ERR_BAD_ARG);
    CHECK_EQ(proto_build_raw(NULL, out, sizeof out, &n), PROTO_RET_ERR_BAD_ARG);
    const proto_frame_t too_long = {PROTO_VERSION, 1, PROTO_CMD_STATUS, payload, PROTO_MAX_PAYLOAD + 1u};
    CHECK_EQ(proto_encode(&too_long, out, sizeof out, &n), PROTO_RET_ERR_BAD_ARG);
    CHECK_EQ(proto_build_raw(&too_long, out, sizeof out, &n), PROTO_RET_ERR_BAD_ARG);
    const proto_frame_t null_payload = {PROTO_VERSION, 1, PROTO_CMD_STATUS, NULL, 3};
    CHECK_EQ(proto_encode(&null_payload, out, sizeof out, &n), PROTO_RET_ERR_BAD_ARG);
    /* every capacity below the needed one is exhausted; the needed one works */
    for (size_t len = 0; len <= PROTO_MAX_PAYLOAD; len += 16u) {
        for (size_t i = 0; i < len; i++) {
            payload[i] = (uint8_t)(i % 3u); /* zeros included */
        }
        const proto_frame_t f = {PROTO_VERSION, 0xABCD, PROTO_REPLY_ACK, payload, len};
        CHECK_EQ(proto_encode(&f, out, sizeof out, &n), PROTO_RET_OK);
        CHECK(n <= PROTO_MAX_WIRE);
        const size_t need = n;
        for (size_t cap = 0; cap < need; cap++) {
            CHECK_EQ(proto_encode(&f, out, cap, &n), PROTO_RET_ERR_EXHAUSTED);
        }
        uint8_t raw[PROTO_MAX_RAW];
        CHECK_EQ(proto_build_raw(&f, raw, PROTO_HEADER_LEN + len + 1u, &n), PROTO_RET_ERR_EXHAUSTED);
        CHECK_EQ(proto_build_raw(&f, raw, sizeof raw, &n), PROTO_RET_OK);
    }
    /* the largest frame fits PROTO_MAX_WIRE */
    for (size_t i = 0; i < PROTO_MAX_PAYLOAD; i++) {
        payload[i] = 0xFF;
    }
    const proto_frame_t maxf = {0xFF, 0xFFFF, 0xFF, payload, PROTO_MAX_PAYLOAD};
    CHECK_EQ(proto_encode(&maxf, out, sizeof out, &n), PROTO_RET_OK);
    CHECK(n <= PROTO_MAX_WIRE);
    /* rx init */
    CHECK_EQ(proto_rx_init(NULL), PROTO_RET_ERR_BAD_ARG);
}

static void test_proto_payload_codecs(void) {
    uint8_t buf[PROTO_MAX_PAYLOAD];
    proto_set_channel_t sc;
    CHECK_EQ(proto_set_channel_unpack(NULL, 9, &sc), PROTO_RET_ERR_BAD_ARG);
    CHECK_EQ(proto_set_channel_unpack(buf, 9, NULL), PROTO_RET_ERR_BAD_ARG);
    CHECK_EQ(proto_set_channel_unpack(buf, 8, &sc), PROTO_RET_ERR_PAYLOAD_LEN);
    proto_trigger_t tr;
    CHECK_EQ(proto_trigger_unpack(NULL, 3, &tr), PROTO_RET_ERR_BAD_ARG);
    CHECK_EQ(proto_trigger_unpack(buf, 3, NULL), PROTO_RET_ERR_BAD_ARG);
    CHECK_EQ(proto_trigger_unpack(buf, 4, &tr), PROTO_RET_ERR_PAYLOAD_LEN);
    const proto_trigger_t t0 = {1, 0xBEEF};
    proto_trigger_pack(&t0, buf);
    CHECK_EQ(proto_trigger_unpack(buf, 3, &tr), PROTO_RET_OK);
    CHECK_EQ(tr.line, 1);
    CHECK_EQ(tr.duration_ms, 0xBEEF);

    proto_hello_t h;
    device_hello(&h);
    proto_hello_pack(&h, buf);
    proto_hello_t h2;
    CHECK_EQ(proto_hello_unpack(buf, PROTO_HELLO_LEN, &h2), PROTO_RET_OK);
    CHECK_EQ(h2.max_current_ua, DEV_MAX_CURRENT_UA);
    CHECK_EQ(h2.max_pulse_width_us, DEV_MAX_PULSE_WIDTH_US);
    CHECK_EQ(h2.max_frequency_dhz, DEV_MAX_FREQUENCY_DHZ);
    CHECK_EQ(h2.max_charge_nc, DEV_MAX_CHARGE_NC);
    CHECK_EQ(h2.ramp_ua_per_ms, DEV_RAMP_UA_PER_MS);
    CHECK_EQ(h2.watchdog_ms, DEV_WATCHDOG_MS);
    CHECK_EQ(h2.max_trigger_ms, DEV_MAX_TRIGGER_MS);
    CHECK_EQ(h2.n_channels, DEV_N_CHANNELS);
    CHECK_EQ(h2.n_triggers, DEV_N_TRIGGERS);
    CHECK_EQ(h2.protocol_version, PROTO_VERSION);
    CHECK_EQ(proto_hello_unpack(buf, PROTO_HELLO_LEN - 1u, &h2), PROTO_RET_ERR_PAYLOAD_LEN);
    CHECK_EQ(proto_hello_unpack(NULL, PROTO_HELLO_LEN, &h2), PROTO_RET_ERR_BAD_ARG);

    proto_status_t s;
    memset(&s, 0, sizeof s);
    s.t_ms = 0xDEADBEEF;
    s.fault = 2;
    s.outputs = 0x5;
    s.triggers = 0x2;
    s.heartbeat_age_ms = 77;
    s.rx_ok = 123456;
    for (size_t c = 0; c < PROTO_N_CHANNELS; c++) {
        s.ch[c] = (proto_channel_status_t){(uint32_t)(1000 * c + 1), (uint32_t)(500 * c), (uint16_t)(10 + c),
                                           (uint16_t)(250 + c), (uint8_t)(c & 3u)};
    }
    for (size_t r = 0; r < PROTO_NACK_COUNT; r++) {
        s.rejected[r] = (uint32_t)(r * 1000003u);
    }
    proto_status_pack(&s, buf);
    proto_status_t s2;
    CHECK_EQ(proto_status_unpack(buf, PROTO_STATUS_LEN, &s2), PROTO_RET_OK);
    CHECK_EQ(s2.t_ms, 0xDEADBEEF);
    CHECK_EQ(s2.fault, 2);
    CHECK_EQ(s2.outputs, 5);
    CHECK_EQ(s2.triggers, 2);
    CHECK_EQ(s2.heartbeat_age_ms, 77);
    CHECK_EQ(s2.rx_ok, 123456);
    for (size_t c = 0; c < PROTO_N_CHANNELS; c++) {
        CHECK_EQ(s2.ch[c].target_ua, s.ch[c].target_ua);
        CHECK_EQ(s2.ch[c].applied_ua, s.ch[c].applied_ua);
        CHECK_EQ(s2.ch[c].pulse_width_us, s.ch[c].pulse_width_us);
        CHECK_EQ(s2.ch[c].frequency_dhz, s.ch[c].frequency_dhz);
        CHECK_EQ(s2.ch[c].flags, s.ch[c].flags);
    }
    for (size_t r = 0; r < PROTO_NACK_COUNT; r++) {
        CHECK_EQ(s2.rejected[r], s.rejected[r]);
    }
    CHECK_EQ(proto_status_unpack(buf, PROTO_STATUS_LEN + 1u, &s2), PROTO_RET_ERR_PAYLOAD_LEN);
    CHECK_EQ(proto_status_unpack(buf, PROTO_STATUS_LEN, NULL), PROTO_RET_ERR_BAD_ARG);
    CHECK_EQ(proto_get_u32((const uint8_t[]){0x78, 0x56, 0x34, 0x12}), 0x12345678);
    CHECK_EQ(proto_get_u16((const uint8_t[]){0x34, 0x12}), 0x1234);
}

static void test_proto_random_frame_round_trips(void) {
    g_rng = 0xF4A3E5ull;
    enum { N = 20000 };
    unsigned long bad = 0;
    proto_rx_t rx;
    (void)proto_rx_init(&rx);
    for (int it = 0; it < N; it++) {
        uint8_t payload[PROTO_MAX_PAYLOAD];
        const size_t len = rnd_below(PROTO_MAX_PAYLOAD + 1u);
        for (size_t i = 0; i < len; i++) {
            payload[i] = rnd_below(5) == 0 ? 0u : (uint8_t)rnd();
        }
        const proto_frame_t f = {PROTO_VERSION, (uint16_t)rnd(), (uint8_t)rnd(), payload, len};
        uint8_t wire[PROTO_MAX_WIRE];
        size_t n = 0;
        if (proto_encode(&f, wire, sizeof wire, &n) != PROTO_RET_OK || wire[n - 1u] != 0u ||
            memchr(wire, 0, n - 1u) != NULL) {
            bad++;
            continue;
        }
        /* stream-decode it, split into random chunks (resumable state) */
        int frames = 0;
        proto_frame_t g = {0, 0, 0, NULL, 0};
        for (size_t i = 0; i < n; i++) {
            const cobs_dec_t r = cobs_decoder_push(&rx.cobs, wire[i]);
            if (r == COBS_DEC_FRAME) {
                frames++;
                if (proto_parse(rx.buf, cobs_decoder_frame_len(&rx.cobs), &g) != PROTO_RET_OK) {
                    bad++;
                }
            } else if (r != COBS_DEC_MORE) {
                bad++;
            }
        }
        if (frames != 1 || g.seq != f.seq || g.cmd != f.cmd || g.payload_len != len ||
            (len > 0 && memcmp(g.payload, payload, len) != 0)) {
            bad++;
        }
    }
    CHECK_EQ(bad, 0);
    g_checks += N;
}

/* ---------------------------------------------------------------- device harness */

static device_t g_dev;
static uint16_t g_seq;
static uint32_t g_now;

typedef struct {
    uint32_t t_ms;
    uint8_t changed, state, fault, outputs, triggers;
} event_t;

#define MAX_EVENTS 4096
static event_t g_events[MAX_EVENTS];
static size_t g_nevents;

typedef struct {
    int kind; /* 0 none, 1 ACK, 2 NACK, -1 malformed */
    uint16_t seq;
    uint8_t req_cmd;
    uint8_t code; /* ACK status or NACK reason */
    uint8_t detail;
    uint8_t state;
    uint8_t data[PROTO_MAX_PAYLOAD];
    size_t data_len;
    int n_replies;
    size_t events_before; /* events received while handling this command */
} reply_t;

static void dev_reset(uint32_t now) {
    fake_hal_reset(false);
    g_now = now;
    g_hal.now_ms = now;
    CHECK_EQ(device_init(&g_dev, now), DEVICE_RET_OK);
    g_seq = 0;
    g_nevents = 0;
}

/* Read every captured frame: EVENTs go to g_events, the (single expected) reply is returned. */
static reply_t collect(void) {
    reply_t r;
    memset(&r, 0, sizeof r);
    const size_t ev0 = g_nevents;
    uint8_t raw[PROTO_MAX_RAW];
    proto_frame_t f;
    int k;
    while ((k = fake_next_frame(raw, &f)) != 0) {
        if (k < 0) {
            r.kind = -1;
            r.n_replies++;
            continue;
        }
        if (f.cmd == PROTO_REPLY_EVENT && f.payload_len == PROTO_EVENT_LEN) {
            if (g_nevents < MAX_EVENTS) {
                g_events[g_nevents++] = (event_t){proto_get_u32(f.payload), f.payload[4], f.payload[5], f.payload[6],
                                                  f.payload[7], f.payload[8]};
            }
            if (r.n_replies > 0) {
                r.kind = -1; /* an EVENT after the reply: the order promise is broken */
            }
            continue;
        }
        r.n_replies++;
        r.seq = f.seq;
        if (f.cmd == PROTO_REPLY_ACK && f.payload_len >= PROTO_ACK_HEADER_LEN) {
            r.kind = 1;
            r.req_cmd = f.payload[0];
            r.code = f.payload[1];
            r.state = f.payload[2];
            r.data_len = f.payload_len - PROTO_ACK_HEADER_LEN;
            memcpy(r.data, f.payload + PROTO_ACK_HEADER_LEN, r.data_len);
        } else if (f.cmd == PROTO_REPLY_NACK && f.payload_len == PROTO_NACK_LEN) {
            r.kind = 2;
            r.req_cmd = f.payload[0];
            r.code = f.payload[1];
            r.detail = f.payload[2];
            r.state = f.payload[3];
        } else {
            r.kind = -1;
        }
    }
    fake_tx_clear();
    r.events_before = g_nevents - ev0;
    return r;
}

static reply_t send_seq(uint8_t cmd, uint16_t seq, const uint8_t *payload, size_t len) {
    uint8_t wire[PROTO_MAX_WIRE];
    size_t n = 0;
    const proto_frame_t f = {PROTO_VERSION, seq, cmd, payload, len};
    CHECK_EQ(proto_encode(&f, wire, sizeof wire, &n), PROTO_RET_OK);
    CHECK_EQ(device_rx(&g_dev, wire, n, g_now), 1);
    g_seq = seq; /* later send_cmd() calls continue from here */
    reply_t r = collect();
    CHECK_EQ(r.n_replies, 1);
    CHECK_EQ(r.seq, seq);
    CHECK(device_invariants_ok(&g_dev));
    return r;
}

static reply_t send_cmd(uint8_t cmd, const uint8_t *payload, size_t len) {
    return send_seq(cmd, ++g_seq, payload, len);
}

static reply_t cmd0(uint8_t cmd) {
    return send_cmd(cmd, NULL, 0);
}

static reply_t set_channel(uint8_t ch, uint16_t pw, uint32_t ua, uint16_t dhz) {
    const proto_set_channel_t c = {ch, pw, ua, dhz};
    uint8_t p[PROTO_SET_CHANNEL_LEN];
    proto_set_channel_pack(&c, p);
    return send_cmd(PROTO_CMD_SET_CHANNEL, p, sizeof p);
}

static reply_t mask_cmd(uint8_t cmd, uint8_t mask) {
    return send_cmd(cmd, &mask, 1);
}

static reply_t trigger(uint8_t line, uint16_t ms) {
    const proto_trigger_t t = {line, ms};
    uint8_t p[PROTO_TRIGGER_LEN];
    proto_trigger_pack(&t, p);
    return send_cmd(PROTO_CMD_TRIGGER, p, sizeof p);
}

static void tick_to(uint32_t t) {
    while (g_now != t) {
        g_now++;
        g_hal.now_ms = g_now;
        device_tick(&g_dev, g_now);
        CHECK(device_invariants_ok(&g_dev));
    }
    (void)collect();
}

static proto_status_t status(void) {
    reply_t r = cmd0(PROTO_CMD_STATUS);
    proto_status_t s;
    memset(&s, 0, sizeof s);
    CHECK_EQ(r.kind, 1);
    CHECK_EQ(proto_status_unpack(r.data, r.data_len, &s), PROTO_RET_OK);
    return s;
}

#define EXPECT_ACK(r, st, state_)                                                                                  \
    do {                                                                                                           \
        const reply_t rr_ = (r);                                                                                   \
        CHECK_EQ(rr_.kind, 1);                                                                                     \
        CHECK_EQ(rr_.code, (st));                                                                                  \
        CHECK_EQ(rr_.state, (state_));                                                                             \
    } while (0)

#define EXPECT_NACK(r, reason, det)                                                                                \
    do {                                                                                                           \
        const reply_t rr_ = (r);                                                                                   \
        CHECK_EQ(rr_.kind, 2);                                                                                     \
        CHECK_EQ(rr_.code, (reason));                                                                              \
        CHECK_EQ(rr_.detail, (det));                                                                               \
    } while (0)

/* ---------------------------------------------------------------- device tests */

static void test_device_init_and_hello(void) {
    CHECK_EQ(device_init(NULL, 0), DEVICE_RET_ERR_BAD_ARG);
    dev_reset(1000);
    CHECK_EQ(g_hal.off_calls, DEV_N_CHANNELS);
    CHECK(device_invariants_ok(&g_dev));
    CHECK(!device_invariants_ok(NULL));
    reply_t r = cmd0(PROTO_CMD_HELLO);
    EXPECT_ACK(r, PROTO_ACK_OK, PROTO_STATE_DISARMED);
    CHECK_EQ(r.req_cmd, PROTO_CMD_HELLO);
    proto_hello_t h;
    CHECK_EQ(proto_hello_unpack(r.data, r.data_len, &h), PROTO_RET_OK);
    CHECK_EQ(h.max_current_ua, 100000);
    CHECK_EQ(h.watchdog_ms, DEV_WATCHDOG_MS);
    proto_status_t s = status();
    CHECK_EQ(s.t_ms, 1000);
    CHECK_EQ(s.outputs, 0);
    CHECK_EQ(s.heartbeat_age_ms, 0xFFFF);
    CHECK_EQ(s.rx_ok, 1); /* HELLO; this STATUS is counted after the snapshot */
    /* NULL-tolerant entry points */
    CHECK_EQ(device_rx(NULL, (const uint8_t *)"x", 1, 0), 0);
    CHECK_EQ(device_rx(&g_dev, NULL, 1, g_now), 0);
    device_tick(NULL, 0);
    CHECK_EQ(device_handle_raw(NULL, NULL, 0, 0), PROTO_NACK_BAD_FRAMING);
    CHECK_EQ(device_handle_raw(&g_dev, NULL, 0, g_now), PROTO_NACK_BAD_FRAMING);
    r = collect();
    CHECK_EQ(r.kind, 2);
    CHECK_EQ(device_check_channel(NULL, NULL), PROTO_NACK_BAD_ARG);
}

static void test_device_arm_disarm(void) {
    dev_reset(0);
    EXPECT_ACK(cmd0(PROTO_CMD_DISARM), PROTO_ACK_NO_CHANGE, PROTO_STATE_DISARMED);
    reply_t r = cmd0(PROTO_CMD_ARM);
    EXPECT_ACK(r, PROTO_ACK_OK, PROTO_STATE_ARMED);
    CHECK_EQ(r.events_before, 1);
    CHECK_EQ(g_events[g_nevents - 1u].state, PROTO_STATE_ARMED);
    CHECK_EQ(g_events[g_nevents - 1u].changed, PROTO_EVT_STATE);
    EXPECT_ACK(cmd0(PROTO_CMD_ARM), PROTO_ACK_NO_CHANGE, PROTO_STATE_ARMED);
    EXPECT_ACK(set_channel(0, 200, 20000, 250), PROTO_ACK_OK, PROTO_STATE_ARMED);
    r = mask_cmd(PROTO_CMD_STIM_ON, 0x1);
    EXPECT_ACK(r, PROTO_ACK_OK, PROTO_STATE_STIMULATING);
    CHECK_EQ(g_events[g_nevents - 1u].outputs, 0x1);
    CHECK_EQ(g_events[g_nevents - 1u].changed, PROTO_EVT_STATE | PROTO_EVT_OUTPUTS);
    CHECK(g_hal.on[0]);
    EXPECT_ACK(cmd0(PROTO_CMD_ARM), PROTO_ACK_NO_CHANGE, PROTO_STATE_STIMULATING);
    r = cmd0(PROTO_CMD_DISARM);
    EXPECT_ACK(r, PROTO_ACK_OK, PROTO_STATE_DISARMED);
    CHECK(!g_hal.on[0]);
    CHECK_EQ(g_events[g_nevents - 1u].outputs, 0);
    EXPECT_NACK(mask_cmd(PROTO_CMD_STIM_ON, 0x1), PROTO_NACK_NOT_ARMED, 0);
    /* settings survive disarm: re-arm and switch on without SET_CHANNEL */
    EXPECT_ACK(cmd0(PROTO_CMD_ARM), PROTO_ACK_OK, PROTO_STATE_ARMED);
    EXPECT_ACK(mask_cmd(PROTO_CMD_STIM_ON, 0x1), PROTO_ACK_OK, PROTO_STATE_STIMULATING);
}

static void test_device_limits(void) {
    dev_reset(0);
    EXPECT_ACK(cmd0(PROTO_CMD_ARM), PROTO_ACK_OK, PROTO_STATE_ARMED);
    /* exactly at each limit: accepted */
    EXPECT_ACK(set_channel(0, 400, 100000, 1000), PROTO_ACK_OK, PROTO_STATE_ARMED); /* 40 uC, 100 Hz */
    EXPECT_ACK(set_channel(1, 500, 80000, 1), PROTO_ACK_OK, PROTO_STATE_ARMED);     /* 40 uC, 0.1 Hz */
    EXPECT_ACK(set_channel(2, 0, 0, 250), PROTO_ACK_OK, PROTO_STATE_ARMED);         /* zero output is valid */
    const proto_status_t before = status();
    /* one above each limit: refused with the field, nothing changes */
    EXPECT_NACK(set_channel(0, 100, 100001, 250), PROTO_NACK_LIMIT, PROTO_FIELD_CURRENT);
    EXPECT_NACK(set_channel(0, 501, 1000, 250), PROTO_NACK_LIMIT, PROTO_FIELD_PULSE_WIDTH);
    EXPECT_NACK(set_channel(0, 100, 1000, 1001), PROTO_NACK_LIMIT, PROTO_FIELD_FREQUENCY);
    EXPECT_NACK(set_channel(0, 401, 100000, 250), PROTO_NACK_LIMIT, PROTO_FIELD_CHARGE);
    EXPECT_NACK(set_channel(0, 500, 80001, 250), PROTO_NACK_LIMIT, PROTO_FIELD_CHARGE);
    EXPECT_NACK(set_channel(0, 100, 1000, 0), PROTO_NACK_BAD_ARG, PROTO_FIELD_FREQUENCY);
    EXPECT_NACK(set_channel(DEV_N_CHANNELS, 100, 1000, 250), PROTO_NACK_BAD_ARG, PROTO_FIELD_CHANNEL);
    EXPECT_NACK(set_channel(0xFF, 100, 1000, 250), PROTO_NACK_BAD_ARG, PROTO_FIELD_CHANNEL);
    EXPECT_NACK(set_channel(0, 0xFFFF, 0xFFFFFFFFu, 0xFFFF), PROTO_NACK_LIMIT, PROTO_FIELD_CURRENT);
    const proto_status_t after = status();
    for (size_t c = 0; c < DEV_N_CHANNELS; c++) {
        CHECK_EQ(after.ch[c].target_ua, before.ch[c].target_ua);
        CHECK_EQ(after.ch[c].pulse_width_us, before.ch[c].pulse_width_us);
        CHECK_EQ(after.ch[c].frequency_dhz, before.ch[c].frequency_dhz);
        CHECK_EQ(after.ch[c].flags, before.ch[c].flags);
    }
    CHECK_EQ(after.rejected[PROTO_NACK_LIMIT - 1], 6);
    CHECK_EQ(after.rejected[PROTO_NACK_BAD_ARG - 1], 3);
    /* check order: channel before current before pulse width before frequency before charge */
    uint8_t det = 0;
    const proto_set_channel_t all_bad = {9, 9999, 999999, 9999};
    CHECK_EQ(device_check_channel(&all_bad, &det), PROTO_NACK_BAD_ARG);
    CHECK_EQ(det, PROTO_FIELD_CHANNEL);
    const proto_set_channel_t cur_pw = {0, 9999, 999999, 9999};
    CHECK_EQ(device_check_channel(&cur_pw, &det), PROTO_NACK_LIMIT);
    CHECK_EQ(det, PROTO_FIELD_CURRENT);
    const proto_set_channel_t ok = {3, 200, 50000, 500};
    CHECK_EQ(device_check_channel(&ok, NULL), PROTO_NACK_NONE);
    CHECK_EQ(g_hal.violations, 0);
}

static void test_device_stim_on_off(void) {
    dev_reset(0);
    EXPECT_ACK(cmd0(PROTO_CMD_ARM), PROTO_ACK_OK, PROTO_STATE_ARMED);
    EXPECT_NACK(mask_cmd(PROTO_CMD_STIM_ON, 0x1), PROTO_NACK_NOT_CONFIGURED, 0);
    EXPECT_NACK(mask_cmd(PROTO_CMD_STIM_ON, 0x0), PROTO_NACK_BAD_ARG, PROTO_FIELD_CHANNEL_MASK);
    EXPECT_NACK(mask_cmd(PROTO_CMD_STIM_ON, 0x10), PROTO_NACK_BAD_ARG, PROTO_FIELD_CHANNEL_MASK);
    EXPECT_ACK(set_channel(0, 200, 10000, 250), PROTO_ACK_OK, PROTO_STATE_ARMED);
    EXPECT_ACK(set_channel(2, 300, 5000, 400), PROTO_ACK_OK, PROTO_STATE_ARMED);
    EXPECT_NACK(mask_cmd(PROTO_CMD_STIM_ON, 0x7), PROTO_NACK_NOT_CONFIGURED, 1);
    CHECK_EQ(status().outputs, 0); /* all-or-nothing */
    EXPECT_ACK(mask_cmd(PROTO_CMD_STIM_ON, 0x5), PROTO_ACK_OK, PROTO_STATE_STIMULATING);
    EXPECT_ACK(mask_cmd(PROTO_CMD_STIM_ON, 0x5), PROTO_ACK_NO_CHANGE, PROTO_STATE_STIMULATING);
    CHECK(g_hal.on[0] && g_hal.on[2] && !g_hal.on[1]);
    CHECK_EQ(g_hal.out[0].current_ua, 0); /* starts at zero, ramps in ticks */
    CHECK_EQ(g_hal.out[2].frequency_dhz, 400);
    EXPECT_ACK(mask_cmd(PROTO_CMD_STIM_OFF, 0x1), PROTO_ACK_OK, PROTO_STATE_STIMULATING);
    CHECK(!g_hal.on[0] && g_hal.on[2]);
    EXPECT_ACK(mask_cmd(PROTO_CMD_STIM_OFF, 0x1), PROTO_ACK_NO_CHANGE, PROTO_STATE_STIMULATING);
    EXPECT_ACK(mask_cmd(PROTO_CMD_STIM_OFF, 0xF0), PROTO_ACK_NO_CHANGE, PROTO_STATE_STIMULATING); /* ignored */
    reply_t r = mask_cmd(PROTO_CMD_STIM_OFF, 0xFF);
    EXPECT_ACK(r, PROTO_ACK_OK, PROTO_STATE_ARMED);
    CHECK_EQ(g_events[g_nevents - 1u].outputs, 0);
    CHECK(!g_hal.on[2]);
    EXPECT_ACK(mask_cmd(PROTO_CMD_STIM_OFF, 0xFF), PROTO_ACK_NO_CHANGE, PROTO_STATE_ARMED);
    CHECK_EQ(g_hal.violations, 0);
}

static void test_device_ramp(void) {
    dev_reset(0);
    EXPECT_ACK(cmd0(PROTO_CMD_ARM), PROTO_ACK_OK, PROTO_STATE_ARMED);
    EXPECT_ACK(set_channel(0, 200, 50000, 250), PROTO_ACK_OK, PROTO_STATE_ARMED);
    EXPECT_ACK(mask_cmd(PROTO_CMD_STIM_ON, 0x1), PROTO_ACK_OK, PROTO_STATE_STIMULATING);
    for (uint32_t k = 1; k <= 80; k++) {
        tick_to(k);
        CHECK_EQ(g_dev.ch[0].applied_ua, k * DEV_RAMP_UA_PER_MS);
        CHECK_EQ(g_hal.out[0].current_ua, k * DEV_RAMP_UA_PER_MS);
        if (k % 40u == 0u) {
            EXPECT_ACK(cmd0(PROTO_CMD_HEARTBEAT), PROTO_ACK_OK, PROTO_STATE_STIMULATING);
        }
    }
    /* repeated ticks at the same ms do not ramp again */
    device_tick(&g_dev, g_now);
    device_tick(&g_dev, g_now);
    CHECK_EQ(g_dev.ch[0].applied_ua, 80u * DEV_RAMP_UA_PER_MS);
    /* a time jump ramps by one step only (rate never exceeded, stalls only slow the ramp) */
    EXPECT_ACK(cmd0(PROTO_CMD_HEARTBEAT), PROTO_ACK_OK, PROTO_STATE_STIMULATING);
    g_now += 50;
    g_hal.now_ms = g_now;
    device_tick(&g_dev, g_now);
    CHECK_EQ(g_dev.ch[0].applied_ua, 81u * DEV_RAMP_UA_PER_MS);
    (void)collect();
    /* a lower target applies at once */
    EXPECT_ACK(cmd0(PROTO_CMD_HEARTBEAT), PROTO_ACK_OK, PROTO_STATE_STIMULATING);
    EXPECT_ACK(set_channel(0, 200, 3000, 250), PROTO_ACK_OK, PROTO_STATE_STIMULATING);
    CHECK_EQ(g_dev.ch[0].applied_ua, 3000);
    CHECK_EQ(g_hal.out[0].current_ua, 3000);
    /* reaches the target exactly, then stays */
    EXPECT_ACK(set_channel(0, 200, 3250, 250), PROTO_ACK_OK, PROTO_STATE_STIMULATING);
    tick_to(g_now + 3);
    CHECK_EQ(g_dev.ch[0].applied_ua, 3250);
    tick_to(g_now + 5);
    CHECK_EQ(g_dev.ch[0].applied_ua, 3250);
    /* pulse width and frequency changes are immediate */
    EXPECT_ACK(set_channel(0, 350, 3250, 300), PROTO_ACK_OK, PROTO_STATE_STIMULATING);
    CHECK_EQ(g_hal.out[0].pulse_width_us, 350);
    CHECK_EQ(g_hal.out[0].frequency_dhz, 300);
    const proto_status_t s = status();
    CHECK_EQ(s.ch[0].applied_ua, 3250);
    CHECK_EQ(s.ch[0].target_ua, 3250);
    CHECK_EQ(s.ch[0].flags, PROTO_CH_CONFIGURED | PROTO_CH_ON);
    CHECK_EQ(g_hal.violations, 0);
}

/* Arm, configure and switch on channel 0 at now; returns nothing, leaves the device STIMULATING. */
static void start_stim(void) {
    EXPECT_ACK(cmd0(PROTO_CMD_ARM), PROTO_ACK_OK, PROTO_STATE_ARMED);
    EXPECT_ACK(set_channel(0, 200, 20000, 250), PROTO_ACK_OK, PROTO_STATE_ARMED);
    EXPECT_ACK(mask_cmd(PROTO_CMD_STIM_ON, 0x1), PROTO_ACK_OK, PROTO_STATE_STIMULATING);
}

static void test_device_watchdog_timing(void) {
    dev_reset(5000);
    start_stim();
    /* heartbeats every 50 ms for 2 s: never trips */
    for (uint32_t t = 5000; t < 7000; t += 50) {
        tick_to(t);
        EXPECT_ACK(cmd0(PROTO_CMD_HEARTBEAT), PROTO_ACK_OK, PROTO_STATE_STIMULATING);
    }
    tick_to(7000);
    reply_t r = cmd0(PROTO_CMD_HEARTBEAT);
    CHECK_EQ(r.data_len, 4);
    CHECK_EQ(proto_get_u32(r.data), 7000);
    CHECK_EQ(g_dev.state, PROTO_STATE_STIMULATING);
    /* heartbeat age in STATUS */
    tick_to(7030);
    CHECK_EQ(status().heartbeat_age_ms, 30);
    /* one ms before the deadline: still on; at the deadline: off, latched, one EVENT */
    const size_t ev0 = g_nevents;
    tick_to(7000 + DEV_WATCHDOG_MS - 1u);
    CHECK(g_hal.on[0]);
    CHECK_EQ(g_nevents, ev0);
    tick_to(7000 + DEV_WATCHDOG_MS);
    CHECK(!g_hal.on[0]);
    CHECK_EQ(g_hal.off_at_ms[0], 7000 + DEV_WATCHDOG_MS);
    CHECK_EQ(g_dev.state, PROTO_STATE_FAULT);
    CHECK_EQ(g_dev.fault, PROTO_FAULT_WATCHDOG);
    CHECK_EQ(g_nevents, ev0 + 1u);
    const event_t e = g_events[g_nevents - 1u];
    CHECK_EQ(e.t_ms, 7000 + DEV_WATCHDOG_MS);
    CHECK_EQ(e.state, PROTO_STATE_FAULT);
    CHECK_EQ(e.fault, PROTO_FAULT_WATCHDOG);
    CHECK_EQ(e.outputs, 0);
    CHECK_EQ(e.changed, PROTO_EVT_STATE | PROTO_EVT_FAULT | PROTO_EVT_OUTPUTS);
    CHECK(DEV_WATCHDOG_MS < 100u);
    /* latched: heartbeats do not clear it */
    EXPECT_ACK(cmd0(PROTO_CMD_HEARTBEAT), PROTO_ACK_OK, PROTO_STATE_FAULT);
    EXPECT_NACK(cmd0(PROTO_CMD_ARM), PROTO_NACK_FAULT_LATCHED, PROTO_FAULT_WATCHDOG);
    tick_to(g_now + 500);
    CHECK_EQ(g_dev.state, PROTO_STATE_FAULT);
    /* disarmed: no watchdog */
    EXPECT_ACK(cmd0(PROTO_CMD_CLEAR_FAULT), PROTO_ACK_OK, PROTO_STATE_DISARMED);
    tick_to(g_now + 1000);
    CHECK_EQ(g_dev.state, PROTO_STATE_DISARMED);
    /* armed without outputs: the watchdog still trips (ARM starts the watch) */
    EXPECT_ACK(cmd0(PROTO_CMD_ARM), PROTO_ACK_OK, PROTO_STATE_ARMED);
    const uint32_t armed_at = g_now;
    tick_to(g_now + DEV_WATCHDOG_MS);
    CHECK_EQ(g_dev.state, PROTO_STATE_FAULT);
    CHECK_EQ(g_events[g_nevents - 1u].t_ms, armed_at + DEV_WATCHDOG_MS);
}

static void test_device_watchdog_without_ticks(void) {
    /* If ticks stall, the next frame still sees the expired heartbeat: FAULT before the command. */
    dev_reset(0);
    start_stim();
    g_now += DEV_WATCHDOG_MS + 20u;
    g_hal.now_ms = g_now;
    reply_t r = cmd0(PROTO_CMD_HEARTBEAT);
    EXPECT_ACK(r, PROTO_ACK_OK, PROTO_STATE_FAULT);
    CHECK_EQ(r.events_before, 1);
    CHECK(!g_hal.on[0]);
    EXPECT_NACK(mask_cmd(PROTO_CMD_STIM_ON, 0x1), PROTO_NACK_FAULT_LATCHED, PROTO_FAULT_WATCHDOG);
}

static void test_device_watchdog_wraparound(void) {
    const uint32_t t0 = 0xFFFFFFFFu - 40u;
    dev_reset(t0);
    start_stim();
    tick_to(t0 + 30u);
    EXPECT_ACK(cmd0(PROTO_CMD_HEARTBEAT), PROTO_ACK_OK, PROTO_STATE_STIMULATING);
    const uint32_t hb = g_now;
    EXPECT_ACK(trigger(0, 50), PROTO_ACK_OK, PROTO_STATE_STIMULATING); /* expires after the wrap */
    tick_to(hb + 49u);
    CHECK(g_hal.trig[0]);
    tick_to(hb + 50u);
    CHECK(!g_hal.trig[0]);
    tick_to(hb + DEV_WATCHDOG_MS - 1u); /* crosses 2^32 */
    CHECK_EQ(g_dev.state, PROTO_STATE_STIMULATING);
    tick_to(hb + DEV_WATCHDOG_MS);
    CHECK_EQ(g_dev.state, PROTO_STATE_FAULT);
    CHECK_EQ(g_events[g_nevents - 1u].t_ms, (uint32_t)(hb + DEV_WATCHDOG_MS));
}

static void test_device_estop_latch(void) {
    dev_reset(0);
    start_stim();
    EXPECT_ACK(trigger(1, 500), PROTO_ACK_OK, PROTO_STATE_STIMULATING);
    CHECK(g_hal.trig[1]);
    reply_t r = cmd0(PROTO_CMD_ESTOP);
    EXPECT_ACK(r, PROTO_ACK_OK, PROTO_STATE_FAULT);
    CHECK_EQ(r.events_before, 1);
    CHECK(!g_hal.on[0]);
    CHECK(!g_hal.trig[1]);
    const event_t e = g_events[g_nevents - 1u];
    CHECK_EQ(e.fault, PROTO_FAULT_ESTOP);
    CHECK_EQ(e.outputs, 0);
    CHECK_EQ(e.triggers, 0);
    /* everything that could stimulate is refused; DISARM does not clear */
    EXPECT_NACK(cmd0(PROTO_CMD_ARM), PROTO_NACK_FAULT_LATCHED, PROTO_FAULT_ESTOP);
    EXPECT_NACK(set_channel(0, 100, 1000, 250), PROTO_NACK_FAULT_LATCHED, PROTO_FAULT_ESTOP);
    EXPECT_NACK(mask_cmd(PROTO_CMD_STIM_ON, 0x1), PROTO_NACK_FAULT_LATCHED, PROTO_FAULT_ESTOP);
    EXPECT_NACK(trigger(0, 15), PROTO_NACK_FAULT_LATCHED, PROTO_FAULT_ESTOP);
    EXPECT_ACK(cmd0(PROTO_CMD_DISARM), PROTO_ACK_NO_CHANGE, PROTO_STATE_FAULT);
    EXPECT_ACK(mask_cmd(PROTO_CMD_STIM_OFF, 0xFF), PROTO_ACK_NO_CHANGE, PROTO_STATE_FAULT);
    EXPECT_ACK(cmd0(PROTO_CMD_ESTOP), PROTO_ACK_NO_CHANGE, PROTO_STATE_FAULT);
    EXPECT_ACK(cmd0(PROTO_CMD_HEARTBEAT), PROTO_ACK_OK, PROTO_STATE_FAULT);
    EXPECT_ACK(cmd0(PROTO_CMD_HELLO), PROTO_ACK_OK, PROTO_STATE_FAULT);
    tick_to(g_now + 1000);
    CHECK_EQ(g_dev.state, PROTO_STATE_FAULT);
    proto_status_t s = status();
    CHECK_EQ(s.fault, PROTO_FAULT_ESTOP);
    CHECK_EQ(s.rejected[PROTO_NACK_FAULT_LATCHED - 1], 4);
    /* CLEAR_FAULT -> DISARMED; outputs stay off until ARM + STIM_ON */
    r = cmd0(PROTO_CMD_CLEAR_FAULT);
    EXPECT_ACK(r, PROTO_ACK_OK, PROTO_STATE_DISARMED);
    CHECK_EQ(g_events[g_nevents - 1u].changed, PROTO_EVT_STATE | PROTO_EVT_FAULT);
    EXPECT_ACK(cmd0(PROTO_CMD_CLEAR_FAULT), PROTO_ACK_NO_CHANGE, PROTO_STATE_DISARMED);
    CHECK(!g_hal.on[0]);
    EXPECT_ACK(cmd0(PROTO_CMD_ARM), PROTO_ACK_OK, PROTO_STATE_ARMED);
    CHECK(!g_hal.on[0]);
    EXPECT_ACK(mask_cmd(PROTO_CMD_STIM_ON, 0x1), PROTO_ACK_OK, PROTO_STATE_STIMULATING);
    CHECK(g_hal.on[0]);
    /* ESTOP from DISARMED also latches */
    EXPECT_ACK(cmd0(PROTO_CMD_DISARM), PROTO_ACK_OK, PROTO_STATE_DISARMED);
    EXPECT_ACK(cmd0(PROTO_CMD_ESTOP), PROTO_ACK_OK, PROTO_STATE_FAULT);
    /* a watchdog fault keeps its cause when ESTOP follows */
    EXPECT_ACK(cmd0(PROTO_CMD_CLEAR_FAULT), PROTO_ACK_OK, PROTO_STATE_DISARMED);
    EXPECT_ACK(cmd0(PROTO_CMD_ARM), PROTO_ACK_OK, PROTO_STATE_ARMED);
    tick_to(g_now + DEV_WATCHDOG_MS);
    EXPECT_ACK(cmd0(PROTO_CMD_ESTOP), PROTO_ACK_NO_CHANGE, PROTO_STATE_FAULT);
    CHECK_EQ(status().fault, PROTO_FAULT_WATCHDOG);
    CHECK_EQ(g_hal.violations, 0);
}

static void test_device_trigger(void) {
    dev_reset(100);
    EXPECT_NACK(trigger(0, 15), PROTO_NACK_NOT_ARMED, 0);
    EXPECT_ACK(cmd0(PROTO_CMD_ARM), PROTO_ACK_OK, PROTO_STATE_ARMED);
    EXPECT_NACK(trigger(DEV_N_TRIGGERS, 15), PROTO_NACK_BAD_ARG, PROTO_FIELD_TRIGGER_LINE);
    EXPECT_NACK(trigger(0, 0), PROTO_NACK_BAD_ARG, PROTO_FIELD_DURATION);
    EXPECT_NACK(trigger(0, DEV_MAX_TRIGGER_MS + 1u), PROTO_NACK_LIMIT, PROTO_FIELD_DURATION);
    reply_t r = trigger(0, 15);
    EXPECT_ACK(r, PROTO_ACK_OK, PROTO_STATE_ARMED);
    CHECK(g_hal.trig[0]);
    CHECK_EQ(g_events[g_nevents - 1u].triggers, 0x1);
    CHECK_EQ(g_events[g_nevents - 1u].changed, PROTO_EVT_TRIGGERS);
    tick_to(100 + 14);
    CHECK(g_hal.trig[0]);
    tick_to(100 + 15);
    CHECK(!g_hal.trig[0]);
    CHECK_EQ(g_events[g_nevents - 1u].t_ms, 115);
    CHECK_EQ(g_events[g_nevents - 1u].triggers, 0);
    /* DISARM drops a running trigger */
    EXPECT_ACK(trigger(1, DEV_MAX_TRIGGER_MS), PROTO_ACK_OK, PROTO_STATE_ARMED);
    CHECK(g_hal.trig[1]);
    EXPECT_ACK(cmd0(PROTO_CMD_DISARM), PROTO_ACK_OK, PROTO_STATE_DISARMED);
    CHECK(!g_hal.trig[1]);
    CHECK_EQ(g_hal.violations, 0);
}

static void test_device_sequence(void) {
    dev_reset(0);
    /* before any frame, any seq is accepted */
    EXPECT_ACK(send_seq(PROTO_CMD_STATUS, 500, NULL, 0), PROTO_ACK_OK, PROTO_STATE_DISARMED);
    EXPECT_NACK(send_seq(PROTO_CMD_STATUS, 500, NULL, 0), PROTO_NACK_SEQUENCE, 0); /* duplicate */
    EXPECT_NACK(send_seq(PROTO_CMD_STATUS, 499, NULL, 0), PROTO_NACK_SEQUENCE, 0); /* behind */
    EXPECT_NACK(send_seq(PROTO_CMD_ARM, (uint16_t)(500u + 0x8000u), NULL, 0), PROTO_NACK_SEQUENCE, 0);
    CHECK_EQ(g_dev.state, PROTO_STATE_DISARMED); /* a refused ARM did nothing */
    EXPECT_ACK(send_seq(PROTO_CMD_STATUS, 501, NULL, 0), PROTO_ACK_OK, PROTO_STATE_DISARMED);
    EXPECT_ACK(send_seq(PROTO_CMD_STATUS, 510, NULL, 0), PROTO_ACK_OK, PROTO_STATE_DISARMED); /* gap ok */
    EXPECT_ACK(send_seq(PROTO_CMD_STATUS, (uint16_t)(510u + 0x7FFFu), NULL, 0), PROTO_ACK_OK,
               PROTO_STATE_DISARMED);
    /* HELLO resets the window to any seq */
    EXPECT_ACK(send_seq(PROTO_CMD_HELLO, 3, NULL, 0), PROTO_ACK_OK, PROTO_STATE_DISARMED);
    EXPECT_NACK(send_seq(PROTO_CMD_STATUS, 3, NULL, 0), PROTO_NACK_SEQUENCE, 0);
    EXPECT_ACK(send_seq(PROTO_CMD_HELLO, 3, NULL, 0), PROTO_ACK_OK, PROTO_STATE_DISARMED); /* HELLO always */
    /* wrap 0xFFFF -> 0 */
    EXPECT_ACK(send_seq(PROTO_CMD_HELLO, 0xFFFF, NULL, 0), PROTO_ACK_OK, PROTO_STATE_DISARMED);
    EXPECT_ACK(send_seq(PROTO_CMD_STATUS, 0, NULL, 0), PROTO_ACK_OK, PROTO_STATE_DISARMED);
    /* a frame refused before the sequence check (bad length) does not move the window */
    uint8_t junk[2] = {0, 0};
    EXPECT_NACK(send_seq(PROTO_CMD_STATUS, 1, junk, 2), PROTO_NACK_BAD_LENGTH, 2);
    EXPECT_ACK(send_seq(PROTO_CMD_STATUS, 1, NULL, 0), PROTO_ACK_OK, PROTO_STATE_DISARMED);
    /* a command-level refusal does move it (the frame was valid) */
    EXPECT_NACK(send_seq(PROTO_CMD_STIM_ON, 2, (const uint8_t[]){1}, 1), PROTO_NACK_NOT_ARMED, 0);
    EXPECT_NACK(send_seq(PROTO_CMD_STATUS, 2, NULL, 0), PROTO_NACK_SEQUENCE, 0);
    CHECK_EQ(status().rejected[PROTO_NACK_SEQUENCE - 1], 5);
}

/* Send raw bytes (already wire-encoded or garbage) and return the reply. */
static reply_t send_wire(const uint8_t *wire, size_t n, size_t expect_answers) {
    CHECK_EQ(device_rx(&g_dev, wire, n, g_now), expect_answers);
    reply_t r = collect();
    CHECK_EQ(r.n_replies, (int)expect_answers);
    return r;
}

static void test_device_reject_counters(void) {
    dev_reset(0);
    uint8_t raw[PROTO_MAX_RAW + 16];
    uint8_t wire[PROTO_MAX_WIRE + 32];
    size_t n = 0;
    size_t m = 0;
    /* BAD_FRAMING: malformed COBS, overflow, too short */
    reply_t r = send_wire((const uint8_t[]){0x05, 0x11, 0x00}, 3, 1);
    CHECK_EQ(r.kind, 2);
    CHECK_EQ(r.code, PROTO_NACK_BAD_FRAMING);
    CHECK_EQ(r.seq, 0);
    for (size_t i = 0; i < sizeof wire; i++) {
        wire[i] = 0x42; /* one endless block */
    }
    for (size_t i = 0; i < sizeof wire; i += 255) {
        wire[i] = 0xFF;
    }
    wire[sizeof wire - 1u] = 0x00;
    r = send_wire(wire, sizeof wire, 1);
    CHECK_EQ(r.code, PROTO_NACK_BAD_FRAMING);
    r = send_wire((const uint8_t[]){0x04, 0x01, 0x02, 0x03, 0x00}, 5, 1); /* 3 raw bytes */
    CHECK_EQ(r.code, PROTO_NACK_BAD_FRAMING);
    /* BAD_CRC: the seq and cmd are echoed as received */
    const proto_frame_t hb = {PROTO_VERSION, 0x0A0B, PROTO_CMD_HEARTBEAT, NULL, 0};
    CHECK_EQ(proto_build_raw(&hb, raw, sizeof raw, &n), PROTO_RET_OK);
    raw[n - 1u] ^= 0x40u;
    CHECK_EQ(cobs_encode(raw, n, wire, sizeof wire, &m), COBS_RET_OK);
    wire[m++] = 0;
    r = send_wire(wire, m, 1);
    CHECK_EQ(r.code, PROTO_NACK_BAD_CRC);
    CHECK_EQ(r.seq, 0x0A0B);
    CHECK_EQ(r.req_cmd, PROTO_CMD_HEARTBEAT);
    /* BAD_VERSION: detail = version received */
    const proto_frame_t v9 = {9, 1, PROTO_CMD_HEARTBEAT, NULL, 0};
    CHECK_EQ(proto_encode(&v9, wire, sizeof wire, &m), PROTO_RET_OK);
    r = send_wire(wire, m, 1);
    CHECK_EQ(r.code, PROTO_NACK_BAD_VERSION);
    CHECK_EQ(r.detail, 9);
    /* UNKNOWN_CMD */
    EXPECT_NACK(send_seq(0x0C, 2, NULL, 0), PROTO_NACK_UNKNOWN_CMD, 0);
    EXPECT_NACK(send_seq(PROTO_REPLY_ACK, 2, NULL, 0), PROTO_NACK_UNKNOWN_CMD, 0);
    /* BAD_LENGTH: detail = received length */
    EXPECT_NACK(send_seq(PROTO_CMD_SET_CHANNEL, 2, raw, 8), PROTO_NACK_BAD_LENGTH, 8);
    /* several frames in one read are each answered, garbage between them included */
    const proto_frame_t st = {PROTO_VERSION, 40, PROTO_CMD_STATUS, NULL, 0};
    size_t k = 0;
    CHECK_EQ(proto_encode(&st, wire, sizeof wire, &m), PROTO_RET_OK);
    k = m;
    wire[k++] = 0x00; /* empty frame: ignored */
    wire[k++] = 0x03;
    wire[k++] = 0x00; /* malformed */
    const proto_frame_t st2 = {PROTO_VERSION, 41, PROTO_CMD_STATUS, NULL, 0};
    CHECK_EQ(proto_encode(&st2, wire + k, sizeof wire - k, &m), PROTO_RET_OK);
    k += m;
    CHECK_EQ(device_rx(&g_dev, wire, k, g_now), 3);
    (void)collect();
    g_seq = 41;
    const proto_status_t s = status();
    CHECK_EQ(s.rejected[PROTO_NACK_BAD_FRAMING - 1], 4);
    CHECK_EQ(s.rejected[PROTO_NACK_BAD_CRC - 1], 1);
    CHECK_EQ(s.rejected[PROTO_NACK_BAD_VERSION - 1], 1);
    CHECK_EQ(s.rejected[PROTO_NACK_UNKNOWN_CMD - 1], 2);
    CHECK_EQ(s.rejected[PROTO_NACK_BAD_LENGTH - 1], 1);
    CHECK_EQ(s.rx_ok, 2);
    /* a byte stream split at every position decodes the same (resumable decoder) */
    const proto_frame_t st3 = {PROTO_VERSION, 100, PROTO_CMD_STATUS, NULL, 0};
    CHECK_EQ(proto_encode(&st3, wire, sizeof wire, &m), PROTO_RET_OK);
    for (size_t cut = 0; cut <= m; cut++) {
        (void)send_seq(PROTO_CMD_HELLO, 1, NULL, 0);
        CHECK_EQ(device_rx(&g_dev, wire, cut, g_now), cut == m ? 1u : 0u);
        CHECK_EQ(device_rx(&g_dev, wire + cut, m - cut, g_now), cut == m ? 0u : 1u);
        r = collect();
        CHECK_EQ(r.kind, 1);
        CHECK_EQ(r.seq, 100);
    }
}

/* Random host command sequences (seeded): invariants after every step, no HAL violation. */
static void test_device_random_sequences(void) {
    g_rng = 0x5EED5EEDull;
    dev_reset(0);
    unsigned long replies = 0;
    unsigned long frames = 0;
    unsigned long in_state[4] = {0, 0, 0, 0};
    for (int it = 0; it < 30000; it++) {
        in_state[g_dev.state & 3u]++;
        const uint32_t pick = rnd_below(16);
        const uint16_t seq = rnd_below(50) == 0 ? (uint16_t)rnd() : ++g_seq;
        uint8_t p[PROTO_SET_CHANNEL_LEN];
        size_t len = 0;
        uint8_t cmd;
        switch (pick) {
        case 0:
            cmd = PROTO_CMD_ARM;
            break;
        case 1:
            cmd = PROTO_CMD_DISARM;
            break;
        case 2:
        case 3:
        case 4: {
            const proto_set_channel_t c = {(uint8_t)rnd_below(5), (uint16_t)rnd_below(700),
                                           rnd_below(4) == 0 ? rnd() : rnd_below(130000), (uint16_t)rnd_below(1300)};
            proto_set_channel_pack(&c, p);
            len = PROTO_SET_CHANNEL_LEN;
            cmd = PROTO_CMD_SET_CHANNEL;
            break;
        }
        case 5:
        case 6:
            p[0] = (uint8_t)rnd_below(18);
            len = 1;
            cmd = PROTO_CMD_STIM_ON;
            break;
        case 7:
            p[0] = (uint8_t)rnd();
            len = 1;
            cmd = PROTO_CMD_STIM_OFF;
            break;
        case 8:
        case 9:
        case 10:
            cmd = PROTO_CMD_HEARTBEAT;
            break;
        case 11:
            cmd = rnd_below(10) == 0 ? PROTO_CMD_ESTOP : PROTO_CMD_STATUS;
            break;
        case 12: {
            const proto_trigger_t t = {(uint8_t)rnd_below(3), (uint16_t)rnd_below(1200)};
            proto_trigger_pack(&t, p);
            len = PROTO_TRIGGER_LEN;
            cmd = PROTO_CMD_TRIGGER;
            break;
        }
        case 13:
            cmd = PROTO_CMD_CLEAR_FAULT;
            break;
        case 14:
            cmd = PROTO_CMD_HELLO;
            break;
        default:
            cmd = (uint8_t)rnd();
            len = rnd_below(3);
            p[0] = (uint8_t)rnd();
            p[1] = (uint8_t)rnd();
            break;
        }
        uint8_t wire[PROTO_MAX_WIRE];
        size_t n = 0;
        const proto_frame_t f = {PROTO_VERSION, seq, cmd, p, len};
        (void)proto_encode(&f, wire, sizeof wire, &n);
        if (rnd_below(20) == 0) {
            wire[rnd_below((uint32_t)n - 1u)] ^= (uint8_t)(1u << rnd_below(8)); /* line noise */
        }
        frames++;
        const size_t answered = device_rx(&g_dev, wire, n, g_now);
        replies += answered;
        const uint32_t dt = rnd_below(100) == 0 ? 150u : rnd_below(4);
        for (uint32_t k = 0; k < dt; k++) {
            g_now++;
            g_hal.now_ms = g_now;
            device_tick(&g_dev, g_now);
        }
        if (!device_invariants_ok(&g_dev)) {
            CHECK(device_invariants_ok(&g_dev));
            break;
        }
        fake_tx_clear();
    }
    CHECK_EQ(g_hal.violations, 0);
    CHECK(replies >= frames - frames / 10u); /* line noise may merge or split frames */
    for (size_t k = 0; k < 4; k++) {
        CHECK(in_state[k] > 1000u); /* every state was visited often */
    }
    CHECK(!g_hal.tx_overflow);
}

/* The oracle used by the random tests and the fuzzer must actually catch broken states. */
static void test_device_invariants_detect_corruption(void) {
    dev_reset(0);
    start_stim();
    tick_to(g_now + 10);
    CHECK(device_invariants_ok(&g_dev));
    const device_t good = g_dev;
    g_dev.ch[0].target_ua = DEV_MAX_CURRENT_UA + 1u;
    CHECK(!device_invariants_ok(&g_dev));
    g_dev = good;
    g_dev.ch[0].applied_ua = g_dev.ch[0].target_ua + 1u;
    CHECK(!device_invariants_ok(&g_dev));
    g_dev = good;
    g_dev.ch[0].pulse_width_us = DEV_MAX_PULSE_WIDTH_US + 1u;
    CHECK(!device_invariants_ok(&g_dev));
    g_dev = good;
    g_dev.ch[0].frequency_dhz = DEV_MAX_FREQUENCY_DHZ + 1u;
    CHECK(!device_invariants_ok(&g_dev));
    g_dev = good;
    g_dev.ch[0].target_ua = DEV_MAX_CURRENT_UA;
    g_dev.ch[0].pulse_width_us = DEV_MAX_PULSE_WIDTH_US; /* 50 uC > 40 uC */
    CHECK(!device_invariants_ok(&g_dev));
    g_dev = good;
    g_dev.state = PROTO_STATE_ARMED; /* output on while not STIMULATING */
    CHECK(!device_invariants_ok(&g_dev));
    g_dev = good;
    g_dev.ch[0].on = false; /* STIMULATING with nothing on, and HAL shadow disagrees */
    CHECK(!device_invariants_ok(&g_dev));
    g_dev = good;
    g_dev.hal_ch[0].current_ua += 1u; /* HAL not in line with the channel */
    CHECK(!device_invariants_ok(&g_dev));
    g_dev = good;
    g_dev.fault = PROTO_FAULT_ESTOP; /* fault cause without FAULT state */
    CHECK(!device_invariants_ok(&g_dev));
    g_dev = good;
    g_dev.state = PROTO_STATE_DISARMED;
    g_dev.ch[0].on = false;
    g_dev.hal_ch[0].on = false;
    g_dev.triggers = 1; /* trigger high while disarmed */
    g_dev.hal_triggers = 1;
    CHECK(!device_invariants_ok(&g_dev));
    g_dev.triggers = 0; /* HAL trigger disagrees */
    CHECK(!device_invariants_ok(&g_dev));
    g_dev = good;
    CHECK(device_invariants_ok(&g_dev));
}

/* ---------------------------------------------------------------- runner */

typedef struct {
    const char *name;
    void (*fn)(void);
} test_case_t;

static const test_case_t k_tests[] = {
    {"cobs_known_vectors", test_cobs_known_vectors},
    {"cobs_errors", test_cobs_errors},
    {"cobs_incremental_split", test_cobs_incremental_split},
    {"cobs_stream_decoder_errors", test_cobs_stream_decoder_errors},
    {"cobs_random_round_trips", test_cobs_random_round_trips},
    {"crc16", test_crc16},
    {"proto_known_frames", test_proto_known_frames},
    {"proto_parse_errors", test_proto_parse_errors},
    {"proto_build_errors", test_proto_build_errors},
    {"proto_payload_codecs", test_proto_payload_codecs},
    {"proto_random_frame_round_trips", test_proto_random_frame_round_trips},
    {"device_init_and_hello", test_device_init_and_hello},
    {"device_arm_disarm", test_device_arm_disarm},
    {"device_limits", test_device_limits},
    {"device_stim_on_off", test_device_stim_on_off},
    {"device_ramp", test_device_ramp},
    {"device_watchdog_timing", test_device_watchdog_timing},
    {"device_watchdog_without_ticks", test_device_watchdog_without_ticks},
    {"device_watchdog_wraparound", test_device_watchdog_wraparound},
    {"device_estop_latch", test_device_estop_latch},
    {"device_trigger", test_device_trigger},
    {"device_sequence", test_device_sequence},
    {"device_reject_counters", test_device_reject_counters},
    {"device_random_sequences", test_device_random_sequences},
    {"device_invariants_detect_corruption", test_device_invariants_detect_corruption},
};

int main(int argc, char **argv) {
    const char *only = argc > 1 ? argv[1] : NULL;
    size_t ran = 0;
    for (size_t i = 0; i < sizeof k_tests / sizeof k_tests[0]; i++) {
        if (only != NULL && strcmp(only, k_tests[i].name) != 0) {
            continue;
        }
        const unsigned long f0 = g_failures;
        k_tests[i].fn();
        ran++;
        printf("%-40s %s\n", k_tests[i].name, g_failures == f0 ? "ok" : "FAILED");
    }
    printf("firmware unit tests: %zu cases, %lu checks, %lu failures\n", ran, g_checks, g_failures);
    return g_failures == 0 && ran > 0 ? 0 : 1;
}
