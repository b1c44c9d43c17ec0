/*
 * thread: start one thread and join it.
 *
 * glibc creates threads with clone3 and falls back to clone only when
 * clone3 fails with ENOSYS.  A seccomp filter that answers clone3 with
 * EPERM breaks every threaded program; this one shows which it got.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static void *run(void *arg)
{
	(void)arg;
	return NULL;
}

int main(void)
{
	pthread_t t;
	int err = pthread_create(&t, NULL, run, NULL);

	if (err != 0) {
		printf("thread failed: %s\n", strerror(err));
		return 1;
	}
	pthread_join(t, NULL);
	printf("thread ok\n");
	return 0;
}
