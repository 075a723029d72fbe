#define _GNU_SOURCE
#include "CKeyrackSystem.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <unistd.h>

#if defined(__linux__)
#include <sys/random.h>

ssize_t keyrack_getrandom(void *buf, size_t len) {
    return getrandom(buf, len, 0);
}
#else
#include <stdlib.h>

ssize_t keyrack_getrandom(void *buf, size_t len) {
    arc4random_buf(buf, len);
    return (ssize_t)len;
}
#endif

int keyrack_pipe(int fds[2]) {
    return pipe2(fds, O_CLOEXEC);
}

#define KEYRACK_SPAWN_MAX_FDS 16

int keyrack_spawn(const char *path, char *const argv[], char *const envp[], const int *fds, int count, pid_t *pid) {
    if (count < 0 || count > KEYRACK_SPAWN_MAX_FDS) return EINVAL;
    // Copies above every target number first, so that placing one
    // descriptor never overwrites another that is still to be placed.
    int high[KEYRACK_SPAWN_MAX_FDS];
    int made = 0;
    int result = 0;
    for (; made < count; made++) {
        high[made] = fcntl(fds[made], F_DUPFD_CLOEXEC, KEYRACK_SPAWN_MAX_FDS + 3);
        if (high[made] < 0) {
            result = errno;
            goto done;
        }
    }
    posix_spawn_file_actions_t actions;
    result = posix_spawn_file_actions_init(&actions);
    if (result != 0) goto done;
    for (int index = 0; index < count && result == 0; index++) {
        result = posix_spawn_file_actions_adddup2(&actions, high[index], index);
    }
#if defined(__linux__)
    if (result == 0) result = posix_spawn_file_actions_addclosefrom_np(&actions, count);
#endif
    posix_spawnattr_t attributes;
    if (result == 0) result = posix_spawnattr_init(&attributes);
    if (result == 0) {
        // The child starts with default signal handling and an empty mask,
        // whatever this process ignores or blocks.
        sigset_t all, none;
        sigfillset(&all);
        sigemptyset(&none);
        posix_spawnattr_setsigdefault(&attributes, &all);
        posix_spawnattr_setsigmask(&attributes, &none);
        posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
        result = posix_spawn(pid, path, &actions, &attributes, argv, envp);
        posix_spawnattr_destroy(&attributes);
    }
    posix_spawn_file_actions_destroy(&actions);
done:
    for (int index = 0; index < made; index++) close(high[index]);
    return result;
}
