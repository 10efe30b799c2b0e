/*
 * cobs.h - Consistent Overhead Byte Stuffing (Cheshire & Baker, IEEE/ACM ToN 7(2), 1999).
 *
 * Pure C11, freestanding (stdint/stddef/stdbool only), no allocation: every buffer is owned by
 * the caller. Three ways in:
 *   - one-shot cobs_encode() / cobs_decode() on whole buffers;
 *   - an incremental encoder (cobs_enc_*) that builds one encoded frame from several pieces
 *     (header, payload, CRC) without a scratch copy;
 *   - a resumable byte-at-a-time stream decoder (cobs_decoder_*) whose whole state lives in a
 *     struct, for an RX interrupt or a poll loop. 0x00 is the frame delimiter.
 *
 * Encoding follows the reference (Wikipedia) vectors exactly: a block of 254 non-zero bytes at the
 * very end of the input is not followed by an extra 0x01 code byte.
 */
#ifndef STIMBOX_COBS_H
#define STIMBOX_COBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Worst-case encoded size of n input bytes, delimiter NOT included. */
#define COBS_ENCODE_MAX(n) ((size_t)(n) + ((size_t)(n) / 254u) + 1u)

/** Frame delimiter on the wire. */
#define COBS_DELIMITER 0x00u

/** Return codes of the one-shot and incremental functions. */
typedef enum {
    COBS_RET_OK = 0,              /**< success; *out_len is valid */
    COBS_RET_ERR_BAD_ARG = 1,     /**< a required pointer was NULL */
    COBS_RET_ERR_EXHAUSTED = 2,   /**< the output buffer is too small; output is incomplete */
    COBS_RET_ERR_BAD_PAYLOAD = 3, /**< decode only: input is empty, holds a 0x00, or a block
                                       runs past the end of the input */
} cobs_ret_t;

/**
 * Encode in[0..in_len) into out (no delimiter appended).
 *
 * @return COBS_RET_OK; COBS_RET_ERR_BAD_ARG if out or out_len is NULL, or in is NULL while
 *         in_len > 0; COBS_RET_ERR_EXHAUSTED if out_cap < the encoded size
 *         (COBS_ENCODE_MAX(in_len) always suffices).
 */
cobs_ret_t cobs_encode(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap, size_t *out_len);

/**
 * Decode one encoded frame in[0..in_len) (delimiter NOT included) into out.
 * The decoded size is always < in_len, so out_cap = in_len suffices.
 *
 * @return COBS_RET_OK; COBS_RET_ERR_BAD_ARG for a NULL pointer; COBS_RET_ERR_BAD_PAYLOAD if
 *         in_len == 0, in holds a 0x00 byte, or a code byte points past the end;
 *         COBS_RET_ERR_EXHAUSTED if out_cap is too small.
 */
cobs_ret_t cobs_decode(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap, size_t *out_len);

/** Incremental encoder state (one frame). Fields are private. */
typedef struct {
    uint8_t *out;
    size_t cap;
    size_t len;      /* bytes written so far, including the reserved code byte */
    size_t code_idx; /* where the current block's code byte goes */
    uint8_t code;    /* 1 + number of data bytes in the current block */
    bool ok;         /* false once the output was exhausted */
} cobs_enc_t;

/**
 * Start encoding a frame into out[0..cap).
 * @return COBS_RET_OK; COBS_RET_ERR_BAD_ARG for NULL; COBS_RET_ERR_EXHAUSTED if cap == 0.
 */
cobs_ret_t cobs_enc_begin(cobs_enc_t *enc, uint8_t *out, size_t cap);

/**
 * Append in[0..n) to the frame being encoded.
 * @return COBS_RET_OK; COBS_RET_ERR_BAD_ARG for NULL (in may be NULL when n == 0);
 *         COBS_RET_ERR_EXHAUSTED if out ran full (sticky: later calls keep failing).
 */
cobs_ret_t cobs_enc_push(cobs_enc_t *enc, const uint8_t *in, size_t n);

/**
 * Close the frame. If append_delimiter, a 0x00 is written after it.
 * @return COBS_RET_OK with *out_len = total bytes written; COBS_RET_ERR_BAD_ARG for NULL;
 *         COBS_RET_ERR_EXHAUSTED if any push (or the delimiter) did not fit.
 */
cobs_ret_t cobs_enc_end(cobs_enc_t *enc, bool append_delimiter, size_t *out_len);

/** Result of feeding one byte to the stream decoder. */
typedef enum {
    COBS_DEC_MORE = 0,         /**< byte consumed, no frame ended (also: empty frame skipped) */
    COBS_DEC_FRAME = 1,        /**< a delimiter ended a well-formed frame: cobs_decoder_frame()
                                    is valid until the next push */
    COBS_DEC_ERR_OVERFLOW = 2, /**< a delimiter ended a frame that did not fit the buffer (dropped) */
    COBS_DEC_ERR_MALFORMED = 3 /**< a delimiter ended a frame whose last block was truncated (dropped) */
} cobs_dec_t;

/** Resumable stream decoder. Fields are private; the buffer is caller-owned. */
typedef struct {
    uint8_t *buf;
    size_t cap;
    size_t len;         /* decoded bytes of the current frame */
    uint8_t block_left; /* data bytes still expected in the current block */
    uint8_t code;       /* code byte of the current block (0: none yet) */
    bool started;       /* a non-delimiter byte was seen since the last delimiter */
    bool overflow;      /* the current frame overflowed buf */
} cobs_decoder_t;

/**
 * Initialise a stream decoder writing decoded frames into buf[0..cap).
 * @return COBS_RET_OK; COBS_RET_ERR_BAD_ARG if d or buf is NULL or cap == 0.
 */
cobs_ret_t cobs_decoder_init(cobs_decoder_t *d, uint8_t *buf, size_t cap);

/** Drop any partial frame; the next byte starts a new frame. d must not be NULL. */
void cobs_decoder_reset(cobs_decoder_t *d);

/**
 * Feed one received byte. Errors are reported when the delimiter ending the bad frame arrives,
 * after which the decoder is resynchronised. Bytes received before the first delimiter are
 * treated as a (probably partial) frame.
 * @return see cobs_dec_t. d must not be NULL (checked by the caller; no return channel here).
 */
cobs_dec_t cobs_decoder_push(cobs_decoder_t *d, uint8_t byte);

/** Length of the frame just reported by COBS_DEC_FRAME. */
size_t cobs_decoder_frame_len(const cobs_decoder_t *d);

#ifdef __cplusplus
}
#endif

#endif /* STIMBOX_COBS_H */
