/* hal_host.c - see hal_host.h. POSIX only; never part of the MCU build. */
#define _POSIX_C_SOURCE 200809L

#include "hal_host.h"

#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "device.h"

#define TX_CAP 65536u

static int s_fd = -1;
static FILE *s_log;
static bool s_verbose;
static uint64_t s_t0_ns;
static uint8_t s_tx[TX_CAP];
static size_t s_tx_head; /* next byte to write to the fd */
static size_t s_tx_len;  /* bytes queued from s_tx_head (ring) */
static unsigned long long s_tx_dropped;
static hal_output_t s_out[DEV_N_CHANNELS];
static bool s_on[DEV_N_CHANNELS];
static bool s_trig[DEV_N_TRIGGERS];

static uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void hal_host_init(int uart_fd, FILE *log, bool verbose) {
    s_fd = uart_fd;
    s_log = log;
    s_verbose = verbose;
    s_t0_ns = mono_ns();
    s_tx_head = 0;
    s_tx_len = 0;
}

uint64_t hal_host_now_ns(void) {
    return mono_ns() - s_t0_ns;
}

uint32_t hal_millis(void) {
    return (uint32_t)(hal_host_now_ns() / 1000000ull);
}

static void log_line(const char *what, uint8_t index, const hal_output_t *o) {
    if (s_log == NULL) {
        return;
    }
    const uint64_t ns = hal_host_now_ns();
    if (o != NULL) {
        fprintf(s_log, "%10u.%03u ms  ch%u %s current=%u uA pulse_width=%u us frequency=%u.%u Hz\n",
                (unsigned)(ns / 1000000ull), (unsigned)((ns / 1000ull) % 1000ull), (unsigned)index, what,
                (unsigned)o->current_ua, (unsigned)o->pulse_width_us, (unsigned)(o->frequency_dhz / 10u),
                (unsigned)(o->frequency_dhz % 10u));
    } else {
        fprintf(s_log, "%10u.%03u ms  %s%u\n", (unsigned)(ns / 1000000ull), (unsigned)((ns / 1000ull) % 1000ull),
                what, (unsigned)index);
    }
    fflush(s_log);
}

void hal_output_set(uint8_t channel, const hal_output_t *out) {
    if (channel >= DEV_N_CHANNELS || out == NULL) {
        return;
    }
    const bool was_on = s_on[channel];
    const bool shape_changed =
        s_out[channel].pulse_width_us != out->pulse_width_us || s_out[channel].frequency_dhz != out->frequency_dhz;
    s_out[channel] = *out;
    s_on[channel] = true;
    if (!was_on) {
        log_line("ON ", channel, out);
    } else if (s_verbose || shape_changed) {
        log_line("SET", channel, out); /* ramp steps only with --verbose */
    }
}

void hal_output_off(uint8_t channel) {
    if (channel >= DEV_N_CHANNELS) {
        return;
    }
    const bool was_on = s_on[channel];
    s_on[channel] = false;
    s_out[channel].current_ua = 0;
    if (was_on) {
        log_line("OFF ch", channel, NULL);
    }
}

void hal_trigger_write(uint8_t line, bool high) {
    if (line >= DEV_N_TRIGGERS || s_trig[line] == high) {
        return;
    }
    s_trig[line] = high;
    log_line(high ? "TRIGGER HIGH line" : "TRIGGER LOW  line", line, NULL);
}

void hal_uart_write(const uint8_t *data, size_t len) {
    if (data == NULL) {
        return;
    }
    if (len > TX_CAP - s_tx_len) {
        s_tx_dropped += len; /* a whole frame or nothing: never a torn frame */
        return;
    }
    for (size_t i = 0; i < len; i++) {
        s_tx[(s_tx_head + s_tx_len + i) % TX_CAP] = data[i];
    }
    s_tx_len += len;
    (void)hal_host_flush();
}

size_t hal_host_flush(void) {
    while (s_tx_len > 0 && s_fd >= 0) {
        size_t chunk = TX_CAP - s_tx_head;
        if (chunk > s_tx_len) {
            chunk = s_tx_len;
        }
        const ssize_t w = write(s_fd, &s_tx[s_tx_head], chunk);
        if (w <= 0) {
            if (w < 0 && errno == EINTR) {
                continue;
            }
            break; /* EAGAIN: the reader is slow; poll for POLLOUT */
        }
        s_tx_head = (s_tx_head + (size_t)w) % TX_CAP;
        s_tx_len -= (size_t)w;
    }
    return s_tx_len;
}

size_t hal_host_tx_pending(void) {
    return s_tx_len;
}

unsigned long long hal_host_tx_dropped(void) {
    return s_tx_dropped;
}
