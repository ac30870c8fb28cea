/*
 * ready: the benchmark's worker. Writes "PID\n" to FIFO as soon as it runs (so the
 * harness sees each start and each replacement without polling), then sleeps like
 * `sleep infinity`. One static-size program for every tool, started directly (no
 * shell), so all tools pay the same exec.
 *
 * usage: ready FIFO [--exit CODE] [--term-delay MS]
 *   --exit CODE      exit with CODE right after announcing (W4 crash loop)
 *   --term-delay MS  on SIGTERM/SIGINT, exit 0 MS milliseconds later (W5 shutdown);
 *                    without it the default action (death by the signal) applies
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long term_delay_ms = -1;

static void on_term(int sig) {
    (void)sig;
    struct timespec ts = {term_delay_ms / 1000, (term_delay_ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {}
    _exit(0);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: ready FIFO [--exit CODE] [--term-delay MS]\n");
        return 2;
    }
    int exit_code = -1;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--exit") == 0) exit_code = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--term-delay") == 0) term_delay_ms = atol(argv[i + 1]);
    }
    if (term_delay_ms >= 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_term;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
    }
    int fd = open(argv[1], O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) {
        char msg[32];
        int n = snprintf(msg, sizeof msg, "%d\n", (int)getpid());
        if (write(fd, msg, (size_t)n) < 0) {}
        close(fd);
    }
    if (exit_code >= 0) return exit_code;
    for (;;) pause();
}
