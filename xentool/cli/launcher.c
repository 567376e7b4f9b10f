/*
 * The native `xentool` launcher: hands the command to a running command server
 * (xentool/cli/command_server.py), or runs xentool's Python entry point.
 *
 * Python's start-up is most of a short command's time where dom0 is slow (the lab's dom0 runs
 * under QEMU TCG: seconds before the first line of xentool runs).  While the host's daemon runs
 * (xentoold, started by the first create), this program makes a command cost a fork in the warm
 * daemon's command forker and a socket round trip.  It knows
 * nothing of the commands: the server answers "LOCL" for those it does not run (consoles, the
 * lab, --help), "STAL" when its code changed on disk, and then this program becomes
 * `python -m xentool.cli.main ARGS`, exactly what the Python launcher would run.
 *
 * The protocol is xentool/cli/protocol.py's.  Built by xentool/cli/native_launcher.py, which
 * bakes in the interpreter of the environment xentool is installed in (XENTOOL_PYTHON).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef XENTOOL_PYTHON
#error "build with -DXENTOOL_PYTHON='\"/path/to/python\"' (python -m xentool.cli.native_launcher does)"
#endif

#define DEFAULT_SOCKET "/run/xentool/command.sock"

extern char **environ;
static volatile sig_atomic_t interrupted;

static void on_interrupt(int signo)
{
    (void)signo;
    interrupted = 1;
}

/* The command in this process: xentool's Python entry point, without asking a server again. */
static void run_here(int argc, char **argv)
{
    char **args = calloc((size_t)argc + 3, sizeof(*args));
    if (args == NULL) {
        fputs("xentool: error: out of memory\n", stderr);
        exit(1);
    }
    args[0] = XENTOOL_PYTHON;
    args[1] = "-m";
    args[2] = "xentool.cli.main";
    for (int i = 1; i < argc; i++)
        args[i + 2] = argv[i];
    execv(XENTOOL_PYTHON, args);
    fprintf(stderr, "xentool: error: cannot run %s: %s; reinstall xentool (make setup)\n",
            XENTOOL_PYTHON, strerror(errno));
    exit(127);
}

struct buffer {
    char *data;
    size_t len, cap;
};

static int append(struct buffer *b, const char *text)
{
    size_t n = strlen(text) + 1; /* with its NUL: the protocol's separator */
    if (b->len + n > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 4096) + n;
        char *data = realloc(b->data, cap);
        if (data == NULL)
            return -1;
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, text, n);
    b->len += n;
    return 0;
}

/* Length (4 bytes, big-endian), then cwd, argc, the arguments and the environment. */
static int build_request(struct buffer *b, int argc, char **argv)
{
    char count[16];
    char *cwd = getcwd(NULL, 0);

    b->cap = 4096;
    b->len = 4; /* the length, filled in below */
    b->data = malloc(b->cap);
    int failed = cwd == NULL || b->data == NULL;
    snprintf(count, sizeof(count), "%d", argc - 1);
    failed = failed || append(b, cwd) < 0 || append(b, count) < 0;
    for (int i = 1; !failed && i < argc; i++)
        failed = append(b, argv[i]) < 0;
    for (char **e = environ; !failed && *e; e++)
        failed = append(b, *e) < 0;
    free(cwd);
    if (failed)
        return -1;
    uint32_t body = (uint32_t)(b->len - 4);
    b->data[0] = (char)(body >> 24);
    b->data[1] = (char)(body >> 16);
    b->data[2] = (char)(body >> 8);
    b->data[3] = (char)body;
    return 0;
}

/* Send the request with our stdin, stdout and stderr; 0 once all of it is gone. */
static int send_request(int sock, const struct buffer *b)
{
    int fds[3] = {0, 1, 2};
    char control[CMSG_SPACE(sizeof(fds))];
    struct iovec iov = {.iov_base = b->data, .iov_len = b->len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                         .msg_controllen = sizeof(control)};
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);

    memset(control, 0, sizeof(control));
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(fds));
    memcpy(CMSG_DATA(cmsg), fds, sizeof(fds));
    ssize_t sent;
    do
        sent = sendmsg(sock, &msg, MSG_NOSIGNAL);
    while (sent < 0 && errno == EINTR);
    if (sent < 0)
        return -1;
    for (size_t done = (size_t)sent; done < b->len;) {
        ssize_t n = send(sock, b->data + done, b->len - done, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        done += (size_t)n;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *path = getenv("XENTOOL_COMMAND_SOCKET");
    const char *no_daemon = getenv("XENTOOL_NO_DAEMON");
    const char *no_server = getenv("XENTOOL_NO_SERVER"); /* its older name */
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    struct stat st;
    struct buffer request;

    if ((no_daemon != NULL && *no_daemon != '\0') || (no_server != NULL && *no_server != '\0'))
        run_here(argc, argv);
    char in_run_dir[sizeof(addr.sun_path)];
    const char *run_dir = getenv("XENTOOL_RUN_DIR");
    if ((path == NULL || *path == '\0') && run_dir != NULL && *run_dir != '\0') {
        if (snprintf(in_run_dir, sizeof(in_run_dir), "%s/command.sock", run_dir) >= (int)sizeof(in_run_dir))
            run_here(argc, argv);
        path = in_run_dir;
    }
    if (path == NULL || *path == '\0')
        path = DEFAULT_SOCKET;
    /* Never hand our terminal to someone else's socket. */
    if (strlen(path) >= sizeof(addr.sun_path) || stat(path, &st) != 0 || st.st_uid != geteuid())
        run_here(argc, argv);
    memcpy(addr.sun_path, path, strlen(path) + 1);
    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0)
        run_here(argc, argv);
    if (connect(sock, (struct sockaddr *)&addr, sizeof(addr)) != 0 || build_request(&request, argc, argv) != 0
        || send_request(sock, &request) != 0) {
        close(sock); /* no server, or a stale one that hung up before reading: nothing ran there */
        run_here(argc, argv);
    }
    free(request.data);

    /* Ctrl-C: closing the connection interrupts the command on the server (it rolls back). */
    struct sigaction sa = {.sa_handler = on_interrupt};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);

    unsigned char reply[4];
    size_t got = 0;
    while (got < sizeof(reply) && !interrupted) {
        ssize_t n = recv(sock, reply + got, sizeof(reply) - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(sock);
    if (interrupted)
        return 130;
    if (got == sizeof(reply)) {
        if (memcmp(reply, "STAL", 4) == 0 || memcmp(reply, "LOCL", 4) == 0) {
            signal(SIGINT, SIG_DFL);
            run_here(argc, argv);
        }
        int32_t code = (int32_t)(((uint32_t)reply[0] << 24) | ((uint32_t)reply[1] << 16)
                                 | ((uint32_t)reply[2] << 8) | (uint32_t)reply[3]);
        return code;
    }
    fputs("xentool: error: the command server ended without an exit status; the command may have run "
          "in part (`xentool list` shows the domains)\n", stderr);
    return 1;
}
