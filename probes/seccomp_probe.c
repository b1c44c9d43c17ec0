/*
 * seccomp_probe: an i386 system call from a 64-bit program.
 *
 * A 64-bit process on x86_64 may still enter the kernel through int $0x80,
 * the i386 gate, which numbers calls the i386 way; seccomp sees such a call
 * with seccomp_data.arch == AUDIT_ARCH_I386.  A filter that looks only at
 * numbers can be walked around this way: i386's 21 is mount, x86_64's is
 * access.  The probe asks for getpid both ways (i386 number 20, x86_64 39)
 * and prints both results:
 *
 *   seccomp_probe    "int80=PID getpid=PID" when the kernel ran the call,
 *                    "int80=-1 getpid=PID" when a filter refused it (EPERM)
 *
 * Without i386 emulation in the kernel, int $0x80 ends in SIGSEGV.
 */
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	long ret;

	/* Kernels before 4.17 zeroed r8-r11 on this path, so they are
	 * clobbered here. */
	__asm__ volatile ("int $0x80"
			  : "=a"(ret)
			  : "a"(20L)
			  : "r8", "r9", "r10", "r11", "memory");
	printf("int80=%ld getpid=%ld\n", ret, (long)getpid());
	return 0;
}
