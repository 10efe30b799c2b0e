/*
 * stimbox_sim.c - the stimulator box firmware core running on the host, speaking its protocol
 * on a pseudo-terminal (or a given tty path / file descriptor), so host drivers can be tested at
 * the byte level against the real device code.
 *
 *   stimbox-sim [--path TTY | --fd N] [--log FILE] [--verbose]
 *
 * Without --path/--fd it opens a new pty pair and prints the slave path (e.g. /dev/pts/7) as one
 * line on stdout; the host opens that path as a serial port. With --path it opens that tty and
 * prints the path; with --fd it uses fd N (already open, read/write) and prints "fd:N".
 *
 * The loop ticks the device every millisecond against absolute CLOCK_MONOTONIC deadlines
 * (ppoll), feeds received bytes to device_rx() and flushes replies. Output changes are logged
 * with timestamps (stderr, or --log FILE); the device itself reports every output change to the
 * host with an EVENT frame carrying its millisecond timestamp. SIGTERM/SIGINT/SIGHUP, or EOF on a
 * stdin pipe (the parent died), turn every output off and exit 0 after a one-line summary.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "device.h"
#include "hal_host.h"

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static const char *state_name(proto_state_t s) {
    switch (s) {
    case PROTO_STATE_DISARMED:
        return "DISARMED";
    case PROTO_STATE_ARMED:
        return "ARMED";
    case PROTO_STATE_STIMULATING:
        return "STIMULATING";
    case PROTO_STATE_FAULT:
        return "FAULT";
    default:
        return "?";
    }
}

static const char *fault_name(proto_fault_t f) {
    switch (f) {
    case PROTO_FAULT_NONE:
        return "none";
    case PROTO_FAULT_ESTOP:
        return "ESTOP";
    case PROTO_FAULT_WATCHDOG:
        return "WATCHDOG";
    default:
        return "?";
    }
}

static int set_raw(int fd) {
    struct termios tio;
    if (tcgetattr(fd, &tio) != 0) {
        return -1;
    }
    cfmakeraw(&tio);
    tio.c_cc[VMIN] = 1;
    tio.c_cc[VTIME] = 0;
    return tcsetattr(fd, TCSANOW, &tio);
}

static void usage(FILE *f) {
    fprintf(f, "usage: stimbox-sim [--path TTY | --fd N] [--log FILE] [--verbose]\n"
               "  (no --path/--fd: open a pseudo-terminal and print its slave path on stdout)\n");
}

static device_t g_dev; /* static, as on the MCU */

int main(int argc, char **argv) {
    const char *path = NULL;
    const char *log_path = NULL;
    int fd_arg = -1;
    bool verbose = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--path") == 0 && i + 1 < argc) {
            path = argv[++i];
        } else if (strcmp(argv[i], "--fd") == 0 && i + 1 < argc) {
            char *end = NULL;
            const long v = strtol(argv[++i], &end, 10);
            if (end == NULL || *end != '\0' || v < 0 || v > 65535) {
                fprintf(stderr, "stimbox-sim: --fd needs a file descriptor number, got '%s'\n", argv[i]);
                return 2;
            }
            fd_arg = (int)v;
        } else if (strcmp(argv[i], "--log") == 0 && i + 1 < argc) {
            log_path = argv[++i];
        } else if (strcmp(argv[i], "--verbose") == 0 || strcmp(argv[i], "-v") == 0) {
            verbose = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "stimbox-sim: unknown or incomplete argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (path != NULL && fd_arg >= 0) {
        fprintf(stderr, "stimbox-sim: give --path or --fd, not both\n");
        return 2;
    }

    FILE *log = stderr;
    if (log_path != NULL) {
        log = fopen(log_path, "w");
        if (log == NULL) {
            fprintf(stderr, "stimbox-sim: cannot open log file '%s': %s\n", log_path, strerror(errno));
            return 2;
        }
    }

    int uart = -1;
    int slave_keepalive = -1;
    char shown[512];
    if (fd_arg >= 0) {
        uart = fd_arg;
        snprintf(shown, sizeof shown, "fd:%d", fd_arg);
    } else if (path != NULL) {
        uart = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK);
        if (uart < 0) {
            fprintf(stderr, "stimbox-sim: cannot open '%s': %s\n", path, strerror(errno));
            return 2;
        }
        if (isatty(uart) && set_raw(uart) != 0) {
            fprintf(stderr, "stimbox-sim: cannot set '%s' to raw mode: %s\n", path, strerror(errno));
            return 2;
        }
        snprintf(shown, sizeof shown, "%s", path);
    } else {
        uart = posix_openpt(O_RDWR | O_NOCTTY);
        if (uart < 0 || grantpt(uart) != 0 || unlockpt(uart) != 0) {
            fprintf(stderr, "stimbox-sim: cannot open a pseudo-terminal: %s\n", strerror(errno));
            return 2;
        }
        const char *slave = ptsname(uart);
        if (slave == NULL) {
            fprintf(stderr, "stimbox-sim: ptsname failed: %s\n", strerror(errno));
            return 2;
        }
        snprintf(shown, sizeof shown, "%s", slave);
        /* Hold the slave open ourselves: raw mode from the first byte (no echo, no CR/LF
           translation) and no POLLHUP storm while no host has it open. */
        slave_keepalive = open(shown, O_RDWR | O_NOCTTY);
        if (slave_keepalive < 0 || set_raw(slave_keepalive) != 0) {
            fprintf(stderr, "stimbox-sim: cannot configure pty slave '%s': %s\n", shown, strerror(errno));
            return 2;
        }
    }
    const int fl = fcntl(uart, F_GETFL);
    if (fl < 0 || fcntl(uart, F_SETFL, fl | O_NONBLOCK) != 0) {
        fprintf(stderr, "stimbox-sim: cannot make the UART non-blocking: %s\n", strerror(errno));
        return 2;
    }

    /* Signals are blocked except inside ppoll: no lost wake-up. */
    sigset_t block;
    sigset_t during_poll;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    sigprocmask(SIG_BLOCK, &block, &during_poll);
    sigdelset(&during_poll, SIGTERM);
    sigdelset(&during_poll, SIGINT);
    sigdelset(&during_poll, SIGHUP);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct stat st;
    const bool watch_stdin = fstat(STDIN_FILENO, &st) == 0 && S_ISFIFO(st.st_mode);

    hal_host_init(uart, log, verbose);
    (void)device_init(&g_dev, hal_millis());

    printf("%s\n", shown);
    fflush(stdout);
    fprintf(log, "stimbox-sim: device on %s; watchdog %u ms; limits %u uA, %u us, %u dHz, %u nC/phase\n", shown,
            (unsigned)DEV_WATCHDOG_MS, (unsigned)DEV_MAX_CURRENT_UA, (unsigned)DEV_MAX_PULSE_WIDTH_US,
            (unsigned)DEV_MAX_FREQUENCY_DHZ, (unsigned)DEV_MAX_CHARGE_NC);
    fflush(log);

    const uint64_t ms = 1000000ull;
    uint64_t next_tick = (hal_host_now_ns() / ms + 1u) * ms;
    unsigned long long ticks = 0;
    unsigned long long overruns = 0;
    unsigned long long rx_bytes = 0;
    unsigned long long frames = 0;
    uint64_t max_late_ns = 0;
    proto_state_t shown_state = g_dev.state;
    proto_fault_t shown_fault = g_dev.fault;
    int exit_code = 0;
    const char *why = "signal";

    while (!g_stop) {
        struct pollfd fds[2];
        nfds_t nfds = 1;
        fds[0].fd = uart;
        fds[0].events = (short)(POLLIN | (hal_host_tx_pending() > 0 ? POLLOUT : 0));
        fds[0].revents = 0;
        if (watch_stdin) {
            fds[1].fd = STDIN_FILENO;
            fds[1].events = POLLIN;
            fds[1].revents = 0;
            nfds = 2;
        }
        const uint64_t now = hal_host_now_ns();
        const uint64_t wait = next_tick > now ? next_tick - now : 0u;
        const struct timespec to = {(time_t)(wait / 1000000000ull), (long)(wait % 1000000000ull)};
        const int pr = ppoll(fds, nfds, &to, &during_poll);
        if (pr < 0 && errno != EINTR) {
            fprintf(log, "stimbox-sim: ppoll failed: %s\n", strerror(errno));
            exit_code = 1;
            why = "ppoll error";
            break;
        }
        if (pr > 0 && (fds[0].revents & POLLIN) != 0) {
            uint8_t buf[512];
            for (;;) {
                const ssize_t n = read(uart, buf, sizeof buf);
                if (n > 0) {
                    rx_bytes += (unsigned long long)n;
                    frames += device_rx(&g_dev, buf, (size_t)n, hal_millis());
                    continue;
                }
                if (n < 0 && errno == EINTR) {
                    continue;
                }
                break; /* EAGAIN, or EIO when a tty is hung up (handled below) */
            }
        }
        if (pr > 0 && (fds[0].revents & (POLLERR | POLLNVAL)) != 0) {
            fprintf(log, "stimbox-sim: UART error (revents 0x%x)\n", (unsigned)fds[0].revents);
            exit_code = 1;
            why = "uart error";
            break;
        }
        if (pr > 0 && (fds[0].revents & POLLHUP) != 0 && slave_keepalive < 0) {
            why = "uart hang-up";
            break;
        }
        if (pr > 0 && nfds == 2 && (fds[1].revents & (POLLIN | POLLHUP)) != 0) {
            char junk[64];
            if (read(STDIN_FILENO, junk, sizeof junk) <= 0) {
                why = "stdin closed";
                break;
            }
        }
        const uint64_t t = hal_host_now_ns();
        if (t >= next_tick) {
            const uint64_t late = t - next_tick;
            if (late > max_late_ns) {
                max_late_ns = late;
            }
            device_tick(&g_dev, hal_millis());
            ticks++;
            next_tick += ms;
            if (t >= next_tick + 5u * ms) { /* far behind (process was descheduled): resync */
                overruns++;
                next_tick = (t / ms + 1u) * ms;
            }
        }
        (void)hal_host_flush();
        if (g_dev.state != shown_state || g_dev.fault != shown_fault) {
            fprintf(log, "%10u ms  state %s -> %s (fault %s)\n", (unsigned)hal_millis(), state_name(shown_state),
                    state_name(g_dev.state), fault_name(g_dev.fault));
            fflush(log);
            shown_state = g_dev.state;
            shown_fault = g_dev.fault;
        }
    }

    for (uint8_t c = 0; c < DEV_N_CHANNELS; c++) {
        hal_output_off(c);
    }
    for (uint8_t t = 0; t < DEV_N_TRIGGERS; t++) {
        hal_trigger_write(t, false);
    }
    (void)hal_host_flush();
    fprintf(log,
            "stimbox-sim: exit (%s): ticks=%llu max_tick_late_us=%llu overruns=%llu rx_bytes=%llu frames=%llu "
            "tx_dropped=%llu\n",
            why, ticks, (unsigned long long)(max_late_ns / 1000u), overruns, rx_bytes, frames, hal_host_tx_dropped());
    fflush(log);
    if (log != stderr) {
        fclose(log);
    }
    if (slave_keepalive >= 0) {
        close(slave_keepalive);
    }
    if (fd_arg < 0) {
        close(uart);
    }
    return exit_code;
}
