/*
 * escape: tries each classic container escape, harmlessly, and reports.
 *
 * One line per probe, always in the same order:
 *
 *   NAME: blocked (ERRNO)              the kernel refused
 *   NAME: POSSIBLE (what it could do)  the way out is open
 *   NAME: skipped (why)                the probe cannot apply here
 *
 * and the exit status is the number of POSSIBLE lines.  Every probe is
 * harmless when it works: it reads, or writes the SysRq key 'h' (help text
 * into the kernel log), or changes something of the container's own and
 * puts it back at once.  Even so, it runs only inside a PID namespace and
 * a mount namespace that are not the host's, and checks that before
 * anything else: run on the host, it prints one line and exits 125.
 *
 *   escape [--tty]    --tty: also push one space into the terminal on fd 0
 *
 * What it cannot see: escapes through the network, devices, cgroups or a
 * kernel bug.  Each line says whether one door is open, not that the
 * container is safe.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define REFUSED 125

/*
 * The kernel numbers its first namespaces with fixed inodes
 * (include/linux/proc_ns.h), so a process can tell the host's namespaces
 * from /proc/self/ns even when it cannot see the host.  The first mount
 * namespace got a fixed number only in recent kernels; before that it was
 * the first number handed out, 0xF0000000.
 */
#define PID_NS_INIT_INO 0xEFFFFFFCU
#define UTS_NS_INIT_INO 0xEFFFFFFEU
#define MNT_NS_INIT_INO 0xEFFFFFF8U
#define MNT_NS_INIT_INO_OLD 0xF0000000U

static int possible;

static const char *errname(int err)
{
	static char number[24];
	const char *name = strerrorname_np(err);

	if (name != NULL)
		return name;
	snprintf(number, sizeof number, "errno %d", err);
	return number;
}

static void report(const char *name, const char *verdict,
		   const char *fmt, ...)
{
	va_list ap;

	printf("%s: %s (", name, verdict);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf(")\n");
}

#define POSSIBLE(name, ...) \
	(possible++, report(name, "POSSIBLE", __VA_ARGS__))
#define BLOCKED(name, err) report(name, "blocked", "%s", errname(err))
#define SKIPPED(name, ...) report(name, "skipped", __VA_ARGS__)

/* The inode of /proc/self/ns/KIND, or 0 if it cannot be read. */
static unsigned long ns_inode(const char *kind)
{
	char path[64];
	struct stat st;

	snprintf(path, sizeof path, "/proc/self/ns/%s", kind);
	return stat(path, &st) == 0 ? (unsigned long)st.st_ino : 0;
}

/*
 * Why the probe must not run here, or NULL when it may.  The PID check is
 * exact, so the host itself is always refused.  The mount check is exact
 * where the kernel fixes the number; on older kernels it trusts the first
 * mount namespace to have the first number, which catches a PID namespace
 * left on the host's mounts (unshare --pid --fork).  NSpid in
 * /proc/self/status cannot tell: in a container with a /proc of its own
 * (every runbox stage from 02 on) it has one entry, as on the host.  No
 * /proc/self/ns means no /proc, and nothing can be told: refuse.  What it
 * cannot tell: a machine that is itself a container passes, and the
 * probes then run in that container.
 */
static const char *not_contained(void)
{
	unsigned long pid_ns = ns_inode("pid");
	unsigned long mnt_ns = ns_inode("mnt");

	if (pid_ns == 0 || mnt_ns == 0)
		return "cannot read /proc/self/ns, so cannot tell where it is";
	if (pid_ns == PID_NS_INIT_INO)
		return "not in a PID namespace of its own";
	if (mnt_ns == MNT_NS_INIT_INO || mnt_ns == MNT_NS_INIT_INO_OLD)
		return "not in a mount namespace of its own";
	return NULL;
}

/*
 * Run fn in a forked child and return its exit status: the errno it
 * failed with, 0 for success, -1 if the fork failed.  The child's changes
 * die with it, and it ends in _exit so it never flushes the parent's
 * buffered output a second time.
 */
static int in_child(int (*fn)(void))
{
	int status;
	pid_t pid = fork();

	if (pid < 0)
		return -1;
	if (pid == 0)
		_exit(fn() == 0 ? 0 : errno);
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

/*
 * sysrq: /proc/sysrq-trigger hands any SysRq key to the host's kernel:
 * 'c' crashes it, 'b' reboots it.  This writes 'h' only, which prints
 * help into the kernel log.  Stopped by a read-only /proc (runbox mounts
 * it so from stage 02 on) or by masking the file, as docker does.
 */
static void probe_sysrq(void)
{
	const char *name = "sysrq";
	int fd = open("/proc/sysrq-trigger", O_WRONLY | O_CLOEXEC);

	if (fd < 0 && errno == ENOENT) {
		SKIPPED(name, "this kernel has no SysRq");
		return;
	}
	if (fd < 0) {
		BLOCKED(name, errno);
		return;
	}
	if (write(fd, "h", 1) != 1) {
		BLOCKED(name, errno);
		close(fd);
		return;
	}
	close(fd);
	POSSIBLE(name, "sends SysRq keys to the host's kernel: "
		 "'c' would crash it");
}

/*
 * mount: with CAP_SYS_ADMIN a container mounts what it likes: a host
 * disk from /dev, a fresh writable /proc, a cgroup tree with a
 * release_agent.  A tmpfs on a fresh directory shows it, and is gone
 * again at once.  Stopped by dropping CAP_SYS_ADMIN, or by seccomp.
 */
static void probe_mount(void)
{
	const char *name = "mount";
	char dir[] = "/tmp/escape-XXXXXX";

	if (mkdtemp(dir) == NULL) {
		SKIPPED(name, "no directory to mount on: mkdtemp /tmp: %s",
			errname(errno));
		return;
	}
	if (mount("escape", dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
		  "size=4k") != 0) {
		BLOCKED(name, errno);
		rmdir(dir);
		return;
	}
	if (umount2(dir, 0) != 0)
		umount2(dir, MNT_DETACH);
	rmdir(dir);
	POSSIBLE(name, "mounts filesystems: a host disk, a writable /proc");
}

/*
 * userns: a new user namespace gives its creator every capability inside
 * it, and with them the kernel code that checks only for those: the
 * start of many kernel exploits.  Tried in a child, which dies with its
 * namespace.  Stopped by seccomp, or refused by the kernel in a chroot.
 */
static int unshare_user(void)
{
	return unshare(CLONE_NEWUSER);
}

static void probe_userns(void)
{
	const char *name = "userns";
	int err = in_child(unshare_user);

	if (err < 0)
		SKIPPED(name, "fork failed");
	else if (err != 0)
		BLOCKED(name, err);
	else
		POSSIBLE(name, "every capability inside one: more of the "
			 "kernel to attack");
}

/*
 * kcore: /proc/kcore is the host's whole kernel memory, keys and all.
 * Reading needs CAP_SYS_RAWIO.  Stopped by dropping it, by the kernel's
 * lockdown, or by masking the file with /dev/null (docker).
 */
static void probe_kcore(void)
{
	const char *name = "kcore";
	char byte;
	ssize_t n;
	int fd = open("/proc/kcore", O_RDONLY | O_CLOEXEC);

	if (fd < 0 && errno == ENOENT) {
		SKIPPED(name, "this kernel has no /proc/kcore");
		return;
	}
	if (fd < 0) {
		BLOCKED(name, errno);
		return;
	}
	n = read(fd, &byte, 1);
	if (n < 0)
		BLOCKED(name, errno);
	else if (n == 0)
		report(name, "blocked", "reads as empty: masked");
	else
		POSSIBLE(name, "reads the host kernel's memory");
	close(fd);
}

/*
 * keys: keyrings belong to the kernel, not to a namespace, so a root
 * container sees the host's keys, and with keyctl(2) reads them.
 * Stopped by a user namespace, by masking /proc/keys, or by seccomp
 * filtering keyctl (docker does the last two).
 */
static void probe_keys(void)
{
	const char *name = "keys";
	char line[512];
	int keys = 0;
	FILE *f = fopen("/proc/keys", "re");

	if (f == NULL && errno == ENOENT) {
		SKIPPED(name, "this kernel has no keyrings");
		return;
	}
	if (f == NULL) {
		BLOCKED(name, errno);
		return;
	}
	while (fgets(line, sizeof line, f) != NULL)
		keys++;
	fclose(f);
	if (keys == 0)
		report(name, "blocked", "no key visible");
	else
		POSSIBLE(name, "sees %d of the host kernel's keys", keys);
}

/*
 * open_by_handle_at: opens a file by its inode's handle, not its path, so
 * a container holding one file of a host filesystem can open every other
 * file on it: the "shocker" escape of 2014, through docker's bind-mounted
 * /etc/hosts.  The kernel checks CAP_DAC_READ_SEARCH before it looks at
 * the handle, so any error but EPERM (or ENOSYS, from seccomp) means the
 * check passed.  An overlay root gives no handle; then a made-up one,
 * which names no file, is enough for the check.  Stopped by dropping
 * CAP_DAC_READ_SEARCH, or by seccomp.
 */
static void probe_open_by_handle_at(void)
{
	const char *name = "open_by_handle_at";
	struct {
		struct file_handle fh;
		unsigned char bytes[MAX_HANDLE_SZ];
	} handle;
	int mount_id, root, fd;

	handle.fh.handle_bytes = MAX_HANDLE_SZ;
	if (name_to_handle_at(AT_FDCWD, "/", &handle.fh, &mount_id, 0) != 0) {
		memset(&handle, 0, sizeof handle);
		handle.fh.handle_bytes = 8;
		handle.fh.handle_type = 1;	/* FILEID_INO32_GEN: inode 0 */
	}
	root = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0) {
		SKIPPED(name, "cannot open /: %s", errname(errno));
		return;
	}
	fd = open_by_handle_at(root, &handle.fh, O_RDONLY | O_CLOEXEC);
	close(root);
	if (fd >= 0) {
		close(fd);
		POSSIBLE(name, "opened / by handle: any file on its "
			 "filesystem would");
	} else if (errno == EPERM || errno == ENOSYS) {
		BLOCKED(name, errno);
	} else {
		POSSIBLE(name, "passes the CAP_DAC_READ_SEARCH check, "
			 "then %s", errname(errno));
	}
}

/*
 * ptrace: with CAP_SYS_PTRACE and the host's PID namespace, a container
 * attaches to a host process and runs its own code in it.  Here the only
 * target is the probe itself, from a child: always inside the container.
 * PTRACE_SEIZE does not stop the target.  PTRACE_DETACH works only on a
 * stopped tracee, so it may fail; the child's exit detaches for sure.
 * Stopped by seccomp, by Yama's ptrace_scope, or by missing capabilities
 * when the target has more than the tracer.
 */
static int seize_parent(void)
{
	pid_t parent = getppid();

	if (ptrace(PTRACE_SEIZE, parent, NULL, NULL) != 0)
		return -1;
	ptrace(PTRACE_DETACH, parent, NULL, NULL);
	return 0;
}

static void probe_ptrace(void)
{
	const char *name = "ptrace";
	int err = in_child(seize_parent);

	if (err < 0)
		SKIPPED(name, "fork failed");
	else if (err != 0)
		BLOCKED(name, err);
	else
		POSSIBLE(name, "traces its own processes; with the host's "
			 "PIDs, the host's");
}

/*
 * tiocsti: TIOCSTI pushes bytes into a terminal's input as if typed, so a
 * container sharing the caller's terminal types commands into the
 * caller's shell, to run on the host after the container ends (C25).
 * Only with --tty: the byte pushed is one space.  Stopped by giving the
 * container a session (or a terminal) of its own, by seccomp, or by the
 * kernel's dev.tty.legacy_tiocsti=0 for processes without CAP_SYS_ADMIN.
 */
static void probe_tiocsti(int tty)
{
	const char *name = "tiocsti";
	char ch = ' ';
	pid_t sid;

	if (!tty) {
		SKIPPED(name, "run with --tty to push a space into the "
			"terminal on fd 0");
		return;
	}
	if (!isatty(0)) {
		SKIPPED(name, "fd 0 is not a terminal");
		return;
	}
	/*
	 * With runbox's -t, fd 0 is the container's own terminal, the
	 * controlling terminal of a session led inside the container (a
	 * leader outside its PID namespace shows as session 0): a byte
	 * pushed there is typed to the container's own shell, no escape.
	 */
	sid = getsid(0);
	if (sid > 0 && tcgetsid(0) == sid) {
		SKIPPED(name, "fd 0 is the container's own terminal (-t)");
		return;
	}
	if (ioctl(0, TIOCSTI, &ch) != 0)
		BLOCKED(name, errno);
	else
		POSSIBLE(name, "types into the caller's terminal");
}

/*
 * module: a kernel module is code in the host's kernel.  finit_module(2)
 * is given /dev/null, which is no module: the kernel checks
 * CAP_SYS_MODULE first, so EPERM means blocked, and any other error means
 * the request got past that check and only the file was refused.
 * Stopped by dropping CAP_SYS_MODULE, or by seccomp.
 */
static void probe_module(void)
{
	const char *name = "module";
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	int err;

	if (fd < 0) {
		SKIPPED(name, "cannot open /dev/null: %s", errname(errno));
		return;
	}
	err = syscall(SYS_finit_module, fd, "", 0) == 0 ? 0 : errno;
	close(fd);
	if (err == ENOSYS && access("/proc/modules", F_OK) != 0)
		SKIPPED(name, "this kernel cannot load modules: ENOSYS");
	else if (err == EPERM || err == ENOSYS)
		BLOCKED(name, err);
	else
		POSSIBLE(name, "passes the CAP_SYS_MODULE check, then %s: "
			 "a module would load", errname(err));
}

/*
 * hostname: without a UTS namespace of its own, sethostname(2) renames
 * the host.  Every stage that runs this probe has one, and the name is
 * put back at once; a process still in the host's UTS namespace (its
 * fixed inode) is not renamed at all.  Stopped by dropping
 * CAP_SYS_ADMIN, or by seccomp.
 */
static void probe_hostname(void)
{
	const char *name = "hostname";
	char old[256] = "";

	if (ns_inode("uts") == UTS_NS_INIT_INO) {
		SKIPPED(name, "in the host's UTS namespace: it would "
			"rename the host");
		return;
	}
	if (gethostname(old, sizeof old - 1) != 0) {
		SKIPPED(name, "gethostname: %s", errname(errno));
		return;
	}
	if (sethostname("escape-probe", strlen("escape-probe")) != 0) {
		BLOCKED(name, errno);
		return;
	}
	sethostname(old, strlen(old));
	POSSIBLE(name, "renames its UTS namespace: without one, the host");
}

/*
 * fd: a directory fd opened outside the container's root and left open
 * (a runtime's leak, CVE-2024-21626 in runc) is a way out: fchdir to it,
 * then ".." climbs the host's tree, since the kernel stops a climb only
 * at the process's root, and this path never passes through it.  Each
 * open fd above 2 that is a directory, and the working directory, is
 * climbed until ".." goes nowhere; a top that is not "/" is outside.
 * Stopped by closing every fd above 2 before the command runs, and by
 * refusing a working directory outside the root (C24).
 */
static int leads_out(int dir, const struct stat *root)
{
	struct stat here, above;
	int i;

	if (fchdir(dir) != 0 || stat(".", &here) != 0)
		return 0;
	for (i = 0; i < 4096; i++) {
		if (chdir("..") != 0 || stat(".", &above) != 0)
			break;
		if (above.st_dev == here.st_dev && above.st_ino == here.st_ino)
			break;
		here = above;
	}
	return here.st_dev != root->st_dev || here.st_ino != root->st_ino;
}

static void probe_fd(void)
{
	const char *name = "fd";
	struct stat root, st;
	struct rlimit limit;
	int cwd, fd, max, found = -1;

	if (stat("/", &root) != 0) {
		SKIPPED(name, "stat /: %s", errname(errno));
		return;
	}
	/* Also the way back to the working directory, afterwards. */
	cwd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cwd < 0) {
		SKIPPED(name, "cannot open the working directory: %s",
			errname(errno));
		return;
	}
	if (leads_out(cwd, &root)) {
		fchdir(cwd);
		close(cwd);
		POSSIBLE(name, "the working directory is outside the root");
		return;
	}

	max = getrlimit(RLIMIT_NOFILE, &limit) == 0 &&
	      limit.rlim_cur < 65536 ? (int)limit.rlim_cur : 65536;
	for (fd = 3; fd < max && found < 0; fd++) {
		if (fd == cwd || fstat(fd, &st) != 0 || !S_ISDIR(st.st_mode))
			continue;
		if (leads_out(fd, &root))
			found = fd;
	}
	fchdir(cwd);
	close(cwd);
	if (found >= 0)
		POSSIBLE(name, "fd %d", found);
	else
		report(name, "blocked", "no fd or working directory leads "
		       "outside /");
}

int main(int argc, char **argv)
{
	const char *why;
	int tty = argc > 1 && strcmp(argv[1], "--tty") == 0;

	/* Before any probe: this may be the host. */
	why = not_contained();
	if (why != NULL) {
		printf("escape: refusing to run: %s\n", why);
		return REFUSED;
	}

	/* One line at a time, even into a pipe, should a probe crash. */
	setvbuf(stdout, NULL, _IOLBF, 0);

	probe_sysrq();
	probe_mount();
	probe_userns();
	probe_kcore();
	probe_keys();
	probe_open_by_handle_at();
	probe_ptrace();
	probe_tiocsti(tty);
	probe_module();
	probe_hostname();
	probe_fd();
	/* 125 is the refusal's; 11 probes never get near it. */
	return possible < REFUSED ? possible : REFUSED - 1;
}
