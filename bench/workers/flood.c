/*
 * flood: W2's worker. Prints COUNT numbered lines "NAME N PAYLOAD\n", PAYLOAD being
 * 80 characters that are a function of N (so a spliced or cut line fails
 * verification), then "NAME END\n". Output goes out in 64 KiB writes that cut
 * lines anywhere, as a block-buffered program's would. Then it announces itself
 * on FIFO (if given) and sleeps until signalled, so tools that stop everything when
 * one process exits (honcho) measure the same thing as the rest.
 *
 * usage: flood NAME COUNT [FIFO]
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char ALPHA[] = "abcdefghijklmnopqrstuvwxyz0123456789";

static void write_all(const char *p, size_t n) {
    while (n) {
        ssize_t w = write(1, p, n);
        if (w <= 0) _exit(1);
        p += w;
        n -= (size_t)w;
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: flood NAME COUNT [FIFO]\n");
        return 2;
    }
    const char *name = argv[1];
    long count = atol(argv[2]);
    enum { CHUNK = 64 * 1024 };
    static char buf[CHUNK + 256];
    size_t len = 0;
    for (long n = 0; n < count; n++) {
        len += (size_t)sprintf(buf + len, "%s %ld ", name, n);
        size_t off = (size_t)(n * 7 % 36);
        for (int i = 0; i < 80; i++) buf[len++] = ALPHA[(off + (size_t)i) % 36];
        buf[len++] = '\n';
        if (len >= CHUNK) {
            write_all(buf, CHUNK);
            memmove(buf, buf + CHUNK, len - CHUNK);
            len -= CHUNK;
        }
    }
    len += (size_t)sprintf(buf + len, "%s END\n", name);
    write_all(buf, len);
    if (argc > 3) {
        int fd = open(argv[3], O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd >= 0) {
            char msg[32];
            int n = snprintf(msg, sizeof msg, "%d\n", (int)getpid());
            if (write(fd, msg, (size_t)n) < 0) {}
            close(fd);
        }
    }
    for (;;) pause();
}
