/*
 * replay.c - run a fuzz target over its seed corpus as a TAP test.
 *
 * `make check` links this with tests/fuzz/<name>-fuzz.c into
 * build/.../tests/fuzz-<name>-t, built with the ordinary compiler (and the
 * sanitizers of the flavour), so the corpus is a regression suite that runs
 * without libFuzzer.  The target's name comes from argv[0]; its corpus is
 * $SHMQ_FUZZ_CORPUS/<name>/ (tests/fuzz/corpus when the variable is unset
 * and the program runs from the top of the tree).
 *
 * Each file runs in a child of its own, so that a crash (an abort() from
 * the target's own checks, a sanitizer report, SIGSEGV) is one "not ok"
 * naming the file instead of the end of the whole run, and so that one
 * input's leftovers cannot hide another's bug.  Files run in name order.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../tap.h"
#include "../testutil.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Seconds one input may take before it counts as a hang. */
#define INPUT_TIMEOUT 20

/* "fuzz-frame-t" -> "frame".  Returns 0 or -1 if argv0 is not so named. */
static int target_name(const char *argv0, char *out, size_t n)
{
	const char *base = strrchr(argv0, '/');
	size_t len;

	base = base ? base + 1 : argv0;
	if (strncmp(base, "fuzz-", 5) != 0)
		return -1;
	base += 5;
	len = strlen(base);
	if (len < 3 || strcmp(base + len - 2, "-t") != 0)
		return -1;
	len -= 2;
	if (len >= n)
		return -1;
	memcpy(out, base, len);
	out[len] = '\0';
	return 0;
}

static int is_input(const struct dirent *d)
{
	return d->d_name[0] != '.';
}

/* Read a whole regular file.  Returns 0 or -errno. */
static int slurp(const char *path, uint8_t **out, size_t *len)
{
	struct stat st;
	uint8_t *buf;
	size_t got = 0;
	int fd, err = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		err = S_ISREG(st.st_mode) ? -errno : -EINVAL;
		close(fd);
		return err;
	}
	/* One spare byte: malloc(0) may be NULL, and a target may be handed
	 * a zero-length input. */
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	while (got < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			err = r < 0 ? -errno : -EIO;
			break;
		}
		got += (size_t)r;
	}
	close(fd);
	if (err) {
		free(buf);
		return err;
	}
	*out = buf;
	*len = got;
	return 0;
}

/* Run one input in a child.  Returns its wait status, or -1 on fork error. */
static int run_one(const uint8_t *data, size_t len)
{
	int status;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		/* The default action of SIGALRM ends a hung input. */
		signal(SIGALRM, SIG_DFL);
		alarm(INPUT_TIMEOUT);
		LLVMFuzzerTestOneInput(data, len);
		_exit(0);
	}
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR)
			return -1;
	}
	return status;
}

int main(int argc, char **argv)
{
	char name[64], dir[PATH_MAX], path[PATH_MAX + NAME_MAX + 2];
	const char *root = getenv("SHMQ_FUZZ_CORPUS");
	struct dirent **ents;
	int n, i;

	(void)argc;
	/* Every input also has its own alarm in its child (INPUT_TIMEOUT);
	 * this one bounds the whole run. */
	tu_init(300);
	if (target_name(argv[0], name, sizeof name) < 0)
		bail("cannot tell the fuzz target from the program name %s", argv[0]);
	if (!root || !*root)
		root = "tests/fuzz/corpus";
	snprintf(dir, sizeof dir, "%s/%s", root, name);

	n = scandir(dir, &ents, is_input, alphasort);
	if (n < 0)
		skip_all("no corpus directory %s: %s", dir, strerror(errno));
	if (n == 0)
		skip_all("corpus directory %s is empty", dir);

	plan(n);
	for (i = 0; i < n; i++) {
		const char *f = ents[i]->d_name;
		uint8_t *data = NULL;
		size_t len = 0;
		int rc, st;

		snprintf(path, sizeof path, "%s/%s", dir, f);
		rc = slurp(path, &data, &len);
		if (rc < 0) {
			ok(0, "%s/%s: cannot read: %s", name, f, strerror(-rc));
			free(ents[i]);
			continue;
		}
		st = run_one(data, len);
		if (st == -1)
			ok(0, "%s/%s: fork or wait failed: %s", name, f, strerror(errno));
		else if (WIFSIGNALED(st))
			ok(0, "%s/%s (%zu bytes): killed by signal %d%s", name, f, len,
			   WTERMSIG(st), WTERMSIG(st) == SIGALRM ? " (hang)" : "");
		else
			ok(WEXITSTATUS(st) == 0, "%s/%s (%zu bytes)%s", name, f, len,
			   WEXITSTATUS(st) ? " failed" : "");
		free(data);
		free(ents[i]);
	}
	free(ents);
	return tap_done();
}
