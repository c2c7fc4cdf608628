/*
 * Wakeup latency under CPU load: a small schbench/cyclictest-like workload for
 * judging where a scheduler puts waking tasks.
 *
 * S sleeper threads (named "wl-sleeper") each wake every P microseconds on an
 * absolute timer and do a few microseconds of work; H hog threads ("wl-hog")
 * spin for the whole run, so a waking sleeper finds every CPU busy unless the
 * scheduler makes room. The run lasts D seconds. On exit it prints one line
 * with the sleepers' timer lateness (wakeup to running, as user space sees it):
 *   wakeup: n=N p50_us=X p99_us=Y max_us=Z
 * The kernel's own view of the same waits is in a telemetry trace's switches
 * table (next_comm == "wl-sleeper"); bench-schedulers reads that one.
 *
 * usage: wakeup [-s SLEEPERS] [-H HOGS] [-p PERIOD_US] [-d SECONDS]
 *   defaults: 2 sleepers, one hog per online CPU, 2000 us, 10 s
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAMPLES 200000

static atomic_int stop;
static long period_us = 2000;
static double duration_s = 10.0;
static long *lat_us;          /* all sleepers' samples */
static atomic_long nlat;

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void *sleeper(void *arg)
{
	(void)arg;
	prctl(PR_SET_NAME, "wl-sleeper");
	long long next = now_ns();
	while (!atomic_load(&stop)) {
		next += period_us * 1000LL;
		struct timespec ts = { next / 1000000000LL, next % 1000000000LL };
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
		long late = (long)((now_ns() - next) / 1000);
		long i = atomic_fetch_add(&nlat, 1);
		if (i < MAX_SAMPLES)
			lat_us[i] = late < 0 ? 0 : late;
		/* a few microseconds of work, as a request handler would do */
		volatile unsigned x = 0;
		for (int k = 0; k < 2000; k++)
			x += k;
	}
	return NULL;
}

static void *hog(void *arg)
{
	(void)arg;
	prctl(PR_SET_NAME, "wl-hog");
	volatile unsigned long x = 0;
	while (!atomic_load(&stop))
		x++;
	return NULL;
}

static int cmp(const void *a, const void *b)
{
	long x = *(const long *)a, y = *(const long *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	int sleepers = 2, hogs = (int)sysconf(_SC_NPROCESSORS_ONLN), c;
	while ((c = getopt(argc, argv, "s:H:p:d:")) != -1) {
		switch (c) {
		case 's': sleepers = atoi(optarg); break;
		case 'H': hogs = atoi(optarg); break;
		case 'p': period_us = atol(optarg); break;
		case 'd': duration_s = atof(optarg); break;
		default:
			fprintf(stderr, "usage: %s [-s SLEEPERS] [-H HOGS] [-p PERIOD_US] [-d SECONDS]\n", argv[0]);
			return 2;
		}
	}
	if (sleepers < 1 || sleepers > 256 || hogs < 0 || hogs > 256 || period_us < 50 || !(duration_s > 0)) {
		fprintf(stderr, "wakeup: out-of-range option (1-256 sleepers, 0-256 hogs, period >= 50 us, duration > 0)\n");
		return 2;
	}
	lat_us = calloc(MAX_SAMPLES, sizeof(*lat_us));
	pthread_t *t = calloc((size_t)(sleepers + hogs), sizeof(*t));
	if (!lat_us || !t)
		return 1;
	for (int i = 0; i < hogs; i++)
		pthread_create(&t[i], NULL, hog, NULL);
	for (int i = 0; i < sleepers; i++)
		pthread_create(&t[hogs + i], NULL, sleeper, NULL);
	struct timespec d = { (time_t)duration_s, (long)((duration_s - (time_t)duration_s) * 1e9) };
	nanosleep(&d, NULL);
	atomic_store(&stop, 1);
	for (int i = 0; i < sleepers + hogs; i++)
		pthread_join(t[i], NULL);
	long n = atomic_load(&nlat);
	if (n > MAX_SAMPLES)
		n = MAX_SAMPLES;
	if (n == 0) {
		fprintf(stderr, "wakeup: no sleeper ever woke\n");
		return 1;
	}
	qsort(lat_us, (size_t)n, sizeof(*lat_us), cmp);
	printf("wakeup: n=%ld p50_us=%ld p99_us=%ld max_us=%ld\n", n, lat_us[n / 2], lat_us[(n * 99) / 100],
	       lat_us[n - 1]);
	return 0;
}
