/*
 * hal_host.h - the HAL of the host simulator (POSIX): UART = a file descriptor (pty master or a
 * tty), outputs and triggers = lines in a log with the device's millisecond timestamp, timer =
 * CLOCK_MONOTONIC since hal_host_init().
 */
#ifndef STIMBOX_HAL_HOST_H
#define STIMBOX_HAL_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "hal.h"

/** Bind the UART to fd (non-blocking) and the log to log (may be NULL: no log). */
void hal_host_init(int uart_fd, FILE *log, bool verbose);

/** Monotonic nanoseconds since hal_host_init (the base of hal_millis). */
uint64_t hal_host_now_ns(void);

/** Write queued TX bytes to the UART fd without blocking. @return bytes still queued. */
size_t hal_host_flush(void);

/** Bytes queued for TX. */
size_t hal_host_tx_pending(void);

/** Bytes dropped because the TX queue was full (the host was not reading). */
unsigned long long hal_host_tx_dropped(void);

#endif /* STIMBOX_HAL_HOST_H */
