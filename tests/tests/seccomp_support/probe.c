/* The syscall probe of tests/tests/build_seccomp.rs, built static (`cc -static`) at test time
 * and copied into a busybox step: it makes the syscalls busybox has no applet for and prints
 * one line per call, `name=OK` or `name=<errno name>`.
 * Usage: probe OUTSIDE_PID (a host process outside the step, for ptrace). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif

static void report(const char *name, long r) {
    if (r >= 0)
        printf("%s=OK\n", name);
    else
        printf("%s=%s\n", name, strerrorname_np(errno) ? strerrorname_np(errno) : "?");
}

int main(int argc, char **argv) {
    long outside = argc > 1 ? atol(argv[1]) : 1;
    report("getpid", syscall(SYS_getpid));
    /* KEYCTL_GET_KEYRING_ID of KEY_SPEC_SESSION_KEYRING, create=0 */
    report("keyctl", syscall(SYS_keyctl, 0, -3, 0, 0, 0));
    report("add_key", syscall(SYS_add_key, "user", "imgfarm-probe", "x", 1, -3));
    /* Arguments the kernel rejects (EINVAL) once past its permission check, so the probe
     * changes nothing even where the call is allowed. */
    report("kexec_load", syscall(SYS_kexec_load, 0, 0, 0, -1L));
    report("kexec_file_load", syscall(SYS_kexec_file_load, -1, -1, 0, "", -1L));
    report("reboot", syscall(SYS_reboot, 0, 0, 0, 0));
    report("init_module", syscall(SYS_init_module, 0, 0, ""));
    report("mount", syscall(SYS_mount, "none", "/mnt", "tmpfs", 0, 0));
    report("unshare_mount", syscall(SYS_unshare, CLONE_NEWNS));
    report("setns", syscall(SYS_setns, 0, 0));
    long c = syscall(SYS_clone, CLONE_NEWUSER | 17 /* SIGCHLD */, 0, 0, 0, 0);
    if (c == 0)
        _exit(0);
    report("clone_newuser", c);
    /* Last of the namespace calls: where it works, the rest runs in a new user namespace. */
    report("unshare_user", syscall(SYS_unshare, CLONE_NEWUSER));
    report("clone3", syscall(SYS_clone3, 0, 0)); /* NULL args: EINVAL where allowed */
    report("personality_addr_no_randomize", syscall(SYS_personality, 0x0040000));
    report("personality_query", syscall(SYS_personality, 0xffffffff));
    report("socket_vsock", syscall(SYS_socket, AF_VSOCK, SOCK_STREAM, 0));
    report("socket_inet", syscall(SYS_socket, AF_INET, SOCK_STREAM, 0));
    /* Link-layer frames would bypass the step's unreachable routes (cloud metadata); raw IP
     * is routed and stays allowed. */
    report("socket_packet", syscall(SYS_socket, AF_PACKET, SOCK_RAW, 0));
    report("socket_raw_ip", syscall(SYS_socket, AF_INET, SOCK_RAW, 1 /* ICMP */));
    report("ptrace_outside", syscall(SYS_ptrace, PTRACE_ATTACH, outside, 0, 0));
    report("kill0_outside", syscall(SYS_kill, outside, 0));
    report("bpf", syscall(SYS_bpf, 0, 0, 0));
    report("perf_event_open", syscall(SYS_perf_event_open, 0, 0, -1, -1, 0));
    report("open_by_handle_at", syscall(SYS_open_by_handle_at, -1, 0, 0));
    return 0;
}
