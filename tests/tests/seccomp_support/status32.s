# The i386 probe of tests/tests/build_seccomp.rs, assembled at test time (`as --32`,
# `ld -m elf_i386`; no C library): prints /proc/self/status with int 0x80 system calls,
# which are i386 ones for the kernel when this runs natively on x86_64.
.globl _start
.text
_start:
    movl $5, %eax           # open(path, O_RDONLY)
    movl $path, %ebx
    xorl %ecx, %ecx
    int $0x80
    testl %eax, %eax
    js fail
    movl %eax, %ebx         # read(fd, buf, 8192)
    movl $3, %eax
    movl $buf, %ecx
    movl $8192, %edx
    int $0x80
    testl %eax, %eax
    js fail
    movl %eax, %edx         # write(1, buf, n)
    movl $4, %eax
    movl $1, %ebx
    movl $buf, %ecx
    int $0x80
    movl $1, %eax           # exit(0)
    xorl %ebx, %ebx
    int $0x80
fail:
    movl $1, %eax           # exit(3)
    movl $3, %ebx
    int $0x80
.data
path: .asciz "/proc/self/status"
.bss
.lcomm buf, 8192
