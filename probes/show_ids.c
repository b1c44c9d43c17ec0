/*
 * show_ids: print the real and effective user ids.
 *
 * Installed setuid root, it shows whether executing a setuid binary still
 * raises privileges: without no_new_privs it prints euid=0 for any user;
 * with it, the setuid bit is ignored.
 */
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	printf("uid=%d euid=%d\n", (int)getuid(), (int)geteuid());
	return 0;
}
