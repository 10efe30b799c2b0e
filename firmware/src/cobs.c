/* cobs.c - see cobs.h. */
#include "cobs.h"

cobs_ret_t cobs_enc_begin(cobs_enc_t *enc, uint8_t *out, size_t cap) {
    if (enc == NULL || out == NULL) {
        return COBS_RET_ERR_BAD_ARG;
    }
    enc->out = out;
    enc->cap = cap;
    enc->code_idx = 0;
    enc->len = 1; /* out[0] is reserved for the first code byte */
    enc->code = 1;
    enc->ok = cap > 0;
    return enc->ok ? COBS_RET_OK : COBS_RET_ERR_EXHAUSTED;
}

/* Write the current block's code byte and reserve the next one. */
static void enc_close_block(cobs_enc_t *enc) {
    if (!enc->ok) {
        return;
    }
    enc->out[enc->code_idx] = enc->code;
    enc->code_idx = enc->len;
    enc->code = 1;
    if (enc->len < enc->cap) {
        enc->len++;
    } else {
        enc->ok = false;
    }
}

cobs_ret_t cobs_enc_push(cobs_enc_t *enc, const uint8_t *in, size_t n) {
    if (enc == NULL || (in == NULL && n > 0)) {
        return COBS_RET_ERR_BAD_ARG;
    }
    for (size_t i = 0; i < n && enc->ok; i++) {
        if (enc->code == 0xFFu) {
            /* The previous block is full and more input follows: close it (no implied zero). */
            enc_close_block(enc);
            if (!enc->ok) {
                break;
            }
        }
        if (in[i] == 0u) {
            enc_close_block(enc);
        } else if (enc->len < enc->cap) {
            enc->out[enc->len++] = in[i];
            enc->code++;
        } else {
            enc->ok = false;
        }
    }
    return enc->ok ? COBS_RET_OK : COBS_RET_ERR_EXHAUSTED;
}

cobs_ret_t cobs_enc_end(cobs_enc_t *enc, bool append_delimiter, size_t *out_len) {
    if (enc == NULL || out_len == NULL) {
        return COBS_RET_ERR_BAD_ARG;
    }
    if (!enc->ok) {
        return COBS_RET_ERR_EXHAUSTED;
    }
    enc->out[enc->code_idx] = enc->code;
    if (append_delimiter) {
        if (enc->len >= enc->cap) {
            enc->ok = false;
            return COBS_RET_ERR_EXHAUSTED;
        }
        enc->out[enc->len++] = COBS_DELIMITER;
    }
    *out_len = enc->len;
    return COBS_RET_OK;
}

cobs_ret_t cobs_encode(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap, size_t *out_len) {
    if (out == NULL || out_len == NULL || (in == NULL && in_len > 0)) {
        return COBS_RET_ERR_BAD_ARG;
    }
    cobs_enc_t enc;
    cobs_ret_t r = cobs_enc_begin(&enc, out, out_cap);
    if (r == COBS_RET_OK) {
        r = cobs_enc_push(&enc, in, in_len);
    }
    if (r == COBS_RET_OK) {
        r = cobs_enc_end(&enc, false, out_len);
    }
    return r;
}

cobs_ret_t cobs_decode(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap, size_t *out_len) {
    if (in == NULL || out == NULL || out_len == NULL) {
        return COBS_RET_ERR_BAD_ARG;
    }
    if (in_len == 0) {
        return COBS_RET_ERR_BAD_PAYLOAD;
    }
    size_t i = 0;
    size_t o = 0;
    while (i < in_len) {
        const uint8_t code = in[i++];
        if (code == 0u) {
            return COBS_RET_ERR_BAD_PAYLOAD;
        }
        const size_t n = (size_t)code - 1u;
        if (n > in_len - i) {
            return COBS_RET_ERR_BAD_PAYLOAD;
        }
        for (size_t k = 0; k < n; k++) {
            const uint8_t b = in[i++];
            if (b == 0u) {
                return COBS_RET_ERR_BAD_PAYLOAD;
            }
            if (o >= out_cap) {
                return COBS_RET_ERR_EXHAUSTED;
            }
            out[o++] = b;
        }
        if (code != 0xFFu && i < in_len) {
            if (o >= out_cap) {
                return COBS_RET_ERR_EXHAUSTED;
            }
            out[o++] = 0u;
        }
    }
    *out_len = o;
    return COBS_RET_OK;
}

cobs_ret_t cobs_decoder_init(cobs_decoder_t *d, uint8_t *buf, size_t cap) {
    if (d == NULL || buf == NULL || cap == 0) {
        return COBS_RET_ERR_BAD_ARG;
    }
    d->buf = buf;
    d->cap = cap;
    cobs_decoder_reset(d);
    return COBS_RET_OK;
}

void cobs_decoder_reset(cobs_decoder_t *d) {
    d->len = 0;
    d->block_left = 0;
    d->code = 0;
    d->started = false;
    d->overflow = false;
}

static void dec_append(cobs_decoder_t *d, uint8_t b) {
    if (d->len < d->cap) {
        d->buf[d->len++] = b;
    } else {
        d->overflow = true;
    }
}

cobs_dec_t cobs_decoder_push(cobs_decoder_t *d, uint8_t byte) {
    if (byte == COBS_DELIMITER) {
        if (!d->started) {
            return COBS_DEC_MORE; /* empty frame (back-to-back delimiters): nothing to report */
        }
        d->started = false; /* len stays readable through cobs_decoder_frame_len() */
        if (d->overflow) {
            d->len = 0;
            return COBS_DEC_ERR_OVERFLOW;
        }
        if (d->block_left != 0u) {
            d->len = 0;
            return COBS_DEC_ERR_MALFORMED;
        }
        return COBS_DEC_FRAME;
    }
    if (!d->started) {
        d->started = true;
        d->len = 0;
        d->code = 0;
        d->block_left = 0;
        d->overflow = false;
    }
    if (d->block_left == 0u) {
        /* A code byte. The block before it implied a zero unless it was a full (0xFF) block. */
        if (d->code != 0u && d->code != 0xFFu) {
            dec_append(d, 0u);
        }
        d->code = byte;
        d->block_left = (uint8_t)(byte - 1u);
    } else {
        dec_append(d, byte);
        d->block_left--;
    }
    return COBS_DEC_MORE;
}

size_t cobs_decoder_frame_len(const cobs_decoder_t *d) {
    return d->len;
}
