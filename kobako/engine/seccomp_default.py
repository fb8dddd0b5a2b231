"""kobako's default seccomp profile, the shape of Docker's: default deny (EPERM), an
allowlist of the syscalls ordinary programs use, and nothing that administers the host
(mount, bpf, kexec, modules, ptrace of others, namespaces, keyrings, clock setting,
swap, reboot...). Names are matched by libseccomp per architecture; names unknown on an
architecture are skipped by the runtime, as runc does.

Like Docker's profile: clone may not create namespaces (the flags are masked out), and
clone3 fails with ENOSYS so that libc falls back to clone, whose flags can be checked.
--privileged and --security-opt seccomp=unconfined run without it; --cap-add SYS_ADMIN
allows the namespace and mount calls Docker allows with that capability.
"""

from __future__ import annotations

ALLOWED = """
accept accept4 access adjtimex afs_syscall alarm arch_prctl bind brk cachestat capget capset chdir
chmod chown chroot clock_getres clock_gettime clock_nanosleep close close_range connect
copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait
epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat
faccessat2 fadvise64 fallocate fanotify_init fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown
fchownat fcntl fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstatfs fsync
ftruncate futex futex_requeue futex_wait futex_waitv futex_wake futimesat get_robust_list
get_thread_area getcpu getcwd getdents getdents64 getegid geteuid getgid getgroups getitimer
getpeername getpgid getpgrp getpid getpmsg getppid getpriority getrandom getresgid getresuid
getrlimit getrusage getsid getsockname getsockopt gettid gettimeofday getuid getxattr
inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel io_destroy io_getevents
io_pgetevents io_setup io_submit io_uring_enter io_uring_register io_uring_setup ioctl ioprio_get
ioprio_set kill landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown lgetxattr
link linkat listen listxattr llistxattr lremovexattr lseek lsetxattr lstat madvise map_shadow_stack
membarrier memfd_create memfd_secret migrate_pages mincore mkdir mkdirat mknod mknodat mlock mlock2
mlockall mmap modify_ldt mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedsend
mq_unlink mremap msgctl msgget msgrcv msgsnd msync munlock munlockall munmap nanosleep newfstatat
open openat openat2 pause pidfd_getfd pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free
pkey_mprotect poll ppoll prctl pread64 preadv preadv2 prlimit64 process_madvise process_mrelease
pselect6 putpmsg pwrite64 pwritev pwritev2 read readahead readlink readlinkat readv recvfrom
recvmmsg recvmsg remap_file_pages removexattr rename renameat renameat2 restart_syscall rmdir rseq
rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait
rt_tgsigqueueinfo sched_get_priority_max sched_get_priority_min sched_getaffinity sched_getattr
sched_getparam sched_getscheduler sched_rr_get_interval sched_setaffinity sched_setattr
sched_setparam sched_setscheduler sched_yield seccomp security select semctl semget semop semtimedop
sendfile sendmmsg sendmsg sendto set_mempolicy_home_node set_robust_list set_thread_area
set_tid_address setdomainname setfsgid setfsuid setgid setgroups sethostname setitimer setpgid
setpriority setregid setresgid setresuid setreuid setrlimit setsid setsockopt setuid setxattr shmat
shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 socket socketpair splice stat statfs
statx symlink symlinkat sync sync_file_range syncfs sysinfo syslog tee tgkill time timer_create
timer_delete timer_getoverrun timer_gettime timer_settime timerfd_create timerfd_gettime
timerfd_settime times tkill truncate tuxcall umask uname unlink unlinkat utime utimensat utimes
vfork vhangup vmsplice vserver wait4 waitid write writev
""".split()

# Refused unless the container has CAP_SYS_ADMIN (Docker's rule for these).
SYS_ADMIN = ("mount", "umount2", "unshare", "setns", "pivot_root", "name_to_handle_at",
             "open_by_handle_at", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
             "mount_setattr", "quotactl", "quotactl_fd", "syslog", "umount", "bpf", "perf_event_open",
             "lookup_dcookie", "fanotify_init")
CLONE_NS_FLAGS = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET


def profile(caps: list[str]) -> dict:
    """The OCI linux.seccomp section for a container with these capabilities."""
    allowed = list(ALLOWED)
    rules: list[dict] = [{"names": allowed, "action": "SCMP_ACT_ALLOW"}]
    if "CAP_SYS_ADMIN" in caps:
        rules.append({"names": list(SYS_ADMIN), "action": "SCMP_ACT_ALLOW"})
        rules.append({"names": ["clone"], "action": "SCMP_ACT_ALLOW"})
    else:
        no_ns = {"index": 0, "value": CLONE_NS_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}
        rules.append({"names": ["clone"], "action": "SCMP_ACT_ALLOW", "args": [no_ns]})
    rules.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38})  # ENOSYS
    if "CAP_SYS_PTRACE" in caps:
        rules.append({"names": ["ptrace", "process_vm_readv", "process_vm_writev", "kcmp"],
                      "action": "SCMP_ACT_ALLOW"})
    if "CAP_SYS_TIME" in caps:
        rules.append({"names": ["settimeofday", "stime", "clock_settime", "clock_adjtime"],
                      "action": "SCMP_ACT_ALLOW"})
    if "CAP_SYS_MODULE" in caps:
        rules.append({"names": ["init_module", "finit_module", "delete_module"], "action": "SCMP_ACT_ALLOW"})
    return {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "architectures": architectures(),
            "syscalls": rules}


def architectures() -> list[str]:
    """The native architecture and the ones it can also run (32-bit x86 on x86_64), as Docker's archMap."""
    import os
    m = os.uname().machine
    return {"x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]}.get(m, [])
