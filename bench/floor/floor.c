/*
 * floor: the minimal launcher the benchmark suite measures every supervisor
 * against (issue 7). posix_spawn each worker into its own process group with
 * stdin from /dev/null and stdout+stderr on one pipe, copy whole lines from every
 * pipe to our stdout, restart a worker that exits (-r), and on SIGTERM/SIGINT send
 * SIGTERM to every group, wait for all of them, and exit. No prefix, no redaction,
 * no backoff, no checks: whatever a supervisor does beyond this is its overhead.
 *
 * usage: floor [-r] SPECFILE
 *   SPECFILE: one worker per line, "REPLICAS ARG0 ARG1 ...", split on spaces.
 *   -r      : restart a worker as soon as it exits (until a stop signal).
 *
 * Build: gcc -O2 -o floor floor.c   (bench/setup.sh does this)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define BUF (64 * 1024)
#define OUTBUF (256 * 1024)

struct proc {
    char **argv;
    pid_t pid;      /* 0 when not running */
    int fd;         /* read end of its pipe, -1 at EOF */
    size_t have;    /* bytes of an incomplete line held in buf */
    char *buf;      /* BUF bytes, allocated on the first read */
};

static struct proc *procs;
static int nprocs;
static int epfd;
static int restart;
static int stopping;
static char out[OUTBUF];
static size_t outlen;
static int live; /* running processes */
static int open_pipes;

static void die(const char *what) {
    perror(what);
    exit(111);
}

static void flush_out(void) {
    size_t off = 0;
    while (off < outlen) {
        ssize_t w = write(1, out + off, outlen - off);
        if (w < 0) {
            if (errno == EINTR) continue;
            outlen = 0; /* stdout gone: discard */
            return;
        }
        off += (size_t)w;
    }
    outlen = 0;
}

static void emit(const char *p, size_t n) {
    if (outlen + n > OUTBUF) flush_out();
    if (n > OUTBUF) { /* cannot happen with BUF < OUTBUF, kept for safety */
        memcpy(out, p, OUTBUF);
        outlen = OUTBUF;
        flush_out();
        return;
    }
    memcpy(out + outlen, p, n);
    outlen += n;
}

static void spawn_one(int i) {
    struct proc *p = &procs[i];
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) die("pipe2");
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
    posix_spawnattr_init(&at);
    sigset_t none, def;
    sigemptyset(&none);
    sigemptyset(&def);
    sigaddset(&def, SIGTERM);
    sigaddset(&def, SIGINT);
    sigaddset(&def, SIGCHLD);
    sigaddset(&def, SIGPIPE);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &def);
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_USEVFORK);
    pid_t pid;
    int rc = posix_spawnp(&pid, p->argv[0], &fa, &at, p->argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(fds[1]);
    if (rc != 0) {
        errno = rc;
        die(p->argv[0]);
    }
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    if (p->fd >= 0) { /* the old run's pipe is still open: drop what is left */
        epoll_ctl(epfd, EPOLL_CTL_DEL, p->fd, NULL);
        close(p->fd);
        open_pipes--;
    }
    p->fd = fds[0];
    p->have = 0;
    p->pid = pid;
    live++;
    open_pipes++;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, p->fd, &ev) < 0) die("epoll_ctl");
}

/* Reads what is there; copies every complete line out. */
static void pump(int i) {
    struct proc *p = &procs[i];
    if (!p->buf && !(p->buf = malloc(BUF))) die("malloc");
    for (;;) {
        ssize_t n = read(p->fd, p->buf + p->have, BUF - p->have);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return;
            n = 0;
        }
        if (n == 0) { /* EOF: a last line without newline goes out as is */
            if (p->have) emit(p->buf, p->have), emit("\n", 1);
            p->have = 0;
            epoll_ctl(epfd, EPOLL_CTL_DEL, p->fd, NULL);
            close(p->fd);
            p->fd = -1;
            open_pipes--;
            return;
        }
        size_t total = p->have + (size_t)n;
        char *nl = memrchr(p->buf, '\n', total);
        if (!nl) {
            if (total == BUF) { emit(p->buf, total); p->have = 0; } /* over-long line */
            else p->have = total;
            continue;
        }
        size_t whole = (size_t)(nl - p->buf) + 1;
        emit(p->buf, whole);
        memmove(p->buf, p->buf + whole, total - whole);
        p->have = total - whole;
    }
}

static void signal_all(int sig) {
    for (int i = 0; i < nprocs; i++)
        if (procs[i].pid > 0) kill(-procs[i].pid, sig);
}

static void reap(void) {
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int i = 0; i < nprocs; i++) {
            if (procs[i].pid != pid) continue;
            procs[i].pid = 0;
            live--;
            if (restart && !stopping) spawn_one(i);
            break;
        }
    }
}

static void load_spec(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) die(path);
    char *line = NULL;
    size_t cap = 0;
    int cap_procs = 0;
    while (getline(&line, &cap, f) > 0) {
        line[strcspn(line, "\n")] = 0;
        char *save = NULL;
        char *tok = strtok_r(line, " ", &save);
        if (!tok || *tok == '#') continue;
        int n = atoi(tok);
        char **argv = calloc(64, sizeof *argv);
        int argc = 0;
        while ((tok = strtok_r(NULL, " ", &save)) && argc < 63) argv[argc++] = strdup(tok);
        if (argc == 0) continue;
        for (int r = 0; r < n; r++) {
            if (nprocs == cap_procs) {
                cap_procs = cap_procs ? cap_procs * 2 : 16;
                procs = realloc(procs, (size_t)cap_procs * sizeof *procs);
            }
            procs[nprocs].argv = argv;
            procs[nprocs].pid = 0;
            procs[nprocs].fd = -1;
            procs[nprocs].have = 0;
            procs[nprocs].buf = NULL;
            nprocs++;
        }
    }
    free(line);
    fclose(f);
}

int main(int argc, char **argv) {
    int a = 1;
    if (a < argc && strcmp(argv[a], "-r") == 0) restart = 1, a++;
    if (a >= argc) {
        fprintf(stderr, "usage: floor [-r] SPECFILE\n");
        return 2;
    }
    load_spec(argv[a]);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) die("signalfd");
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event sev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    epoll_ctl(epfd, EPOLL_CTL_ADD, sfd, &sev);
    for (int i = 0; i < nprocs; i++) spawn_one(i);
    struct epoll_event evs[64];
    while (live > 0 || open_pipes > 0) {
        int n = epoll_wait(epfd, evs, 64, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int k = 0; k < n; k++) {
            if (evs[k].data.u32 != UINT32_MAX) {
                pump((int)evs[k].data.u32);
                continue;
            }
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) == sizeof si) {
                if (si.ssi_signo == SIGCHLD) continue;
                signal_all(stopping ? SIGKILL : SIGTERM);
                stopping = 1;
            }
            reap();
        }
        flush_out();
    }
    flush_out();
    return 0;
}
